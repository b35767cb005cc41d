"""The Open Inference Protocol BYTES tensor codec of gateway.kserve, checked against tritonclient's own."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gateway.kserve import decode_bytes_tensor, encode_bytes_tensor
from hemascope.errors import InvalidArgument

ITEMS = [b"\xff\xd8\xff\xe0jpeg", b"", b"\x89PNG\r\n\x1a\n" * 3]


def test_decodes_what_tritonclient_serializes() -> None:
    raw = serialize_byte_tensor(np.array(ITEMS, dtype=np.object_)).item()
    assert decode_bytes_tensor(raw, len(ITEMS)) == ITEMS


def test_tritonclient_reads_what_we_encode() -> None:
    decoded = deserialize_bytes_tensor(encode_bytes_tensor(ITEMS))
    assert [bytes(item) for item in decoded] == ITEMS


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (encode_bytes_tensor(ITEMS)[:-1], 3, "element cut short"),
        (encode_bytes_tensor(ITEMS) + b"\x01\x00", 3, "length prefix"),
        (encode_bytes_tensor(ITEMS), 2, "shape says 2"),
    ],
)
def test_malformed_tensors_are_invalid_arguments(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode_bytes_tensor(raw, count)
