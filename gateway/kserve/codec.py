"""The raw tensor encoding of the Open Inference Protocol (as Triton packs ``raw_*_contents``).

BYTES tensors are a sequence of elements, each a 4-byte little-endian length then the data; numeric
tensors are little-endian arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hemascope.errors import InvalidArgument

INPUT_NAME = "IMAGE"


def decode_bytes_tensor(raw: bytes, count: int, name: str = INPUT_NAME) -> list[bytes]:
    """The ``count`` elements of a BYTES tensor in raw form; INVALID_ARGUMENT when it does not hold them."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument(f"{name}: truncated BYTES tensor (length prefix cut short)", field=name)
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidArgument(f"{name}: truncated BYTES tensor (element cut short)", field=name)
        items.append(raw[offset : offset + size])
        offset += size
        if len(items) > count:
            break
    if len(items) != count:
        held = "more" if len(items) > count else str(len(items))
        raise InvalidArgument(f"{name}: shape says {count} elements, the data holds {held}", field=name)
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """``items`` as a raw BYTES tensor."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)
