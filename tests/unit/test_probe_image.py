"""``probe_image``: the checks ``decode_image`` makes before reading pixel data, and the same refusals."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hemascope.errors import InvalidImage
from hemascope.imaging import ImageHeader, ImageLimits, decode_image, probe_image


def _encoded(fmt: str, height: int = 20, width: int = 30) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded("JPEG", 8, 8))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _reasons(data: bytes, **kwargs: Any) -> tuple[str, str]:
    """The reasons probe_image and decode_image refuse ``data`` with."""
    reasons = []
    for check in (probe_image, decode_image):
        with pytest.raises(InvalidImage) as info:
            check(data, **kwargs)
        reasons.append(info.value.reason)
    return reasons[0], reasons[1]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF"])
def test_a_good_image_gives_its_format_and_stored_size(fmt: str) -> None:
    assert probe_image(_encoded(fmt)) == ImageHeader(fmt, 30, 20)


@pytest.mark.parametrize(
    ("data", "kwargs"),
    [
        (b"", {}),
        (_encoded("PNG"), {"limits": ImageLimits(max_bytes=100)}),
        (_encoded("PNG"), {"media_type": "image/jpeg"}),
        (_encoded("PNG"), {"media_type": "application/pdf"}),
        (b"GIF89a not a supported image", {}),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, {}),
        (_jpeg_claiming(60_000, 60_000), {}),
        (_encoded("PNG"), {"limits": ImageLimits(max_pixels=599)}),
    ],
    ids=["empty", "too-large", "mismatch", "unsupported-type", "gif", "bad-header", "jpeg-bomb", "pixels"],
)
def test_every_refusal_before_pixel_data_is_the_decoders_own(data: bytes, kwargs: dict[str, Any]) -> None:
    probed, decoded = _reasons(data, **kwargs)
    assert probed == decoded


def test_a_body_corrupt_past_its_header_passes_the_probe_and_only_a_decode_refuses_it() -> None:
    data = _encoded("JPEG", 200, 200)
    truncated = data[: len(data) // 2]
    assert probe_image(truncated) == ImageHeader("JPEG", 200, 200)
    with pytest.raises(InvalidImage):
        decode_image(truncated)
