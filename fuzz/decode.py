"""Fuzzer: image decoding (``hemascope.imaging.decode.decode_image``) with a small pixel limit.

Any input must either decode to RGB pixels of the declared shape or be refused with InvalidImage; never
another exception, a hang or a memory blow-up."""

from __future__ import annotations

import io
from collections.abc import Iterator

import atheris
import numpy as np
from PIL import Image

with atheris.instrument_imports(include=["hemascope"]):
    from fuzz.harness import expected, run
    from hemascope.imaging.decode import ImageLimits, decode_image

LIMITS = ImageLimits(max_bytes=256 * 1024, max_pixels=2_000_000)
MEDIA_TYPES = ("", "image/png", "image/jpeg", "image/tiff", "image/bmp", "image/gif", "text/plain")


def target(data: bytes) -> None:
    if not data:
        return
    media_type = MEDIA_TYPES[data[0] % len(MEDIA_TYPES)]

    def decode() -> None:
        decoded = decode_image(data[1:], LIMITS, media_type)
        pixels = decoded.pixels
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert decoded.width * decoded.height <= LIMITS.max_pixels

    expected(decode)


def seeds() -> Iterator[bytes]:
    rng = np.random.default_rng(0)
    for mode, fmt, kwargs in (
        ("RGB", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("L", "PNG", {}),
        ("I;16", "PNG", {}),
        ("RGB", "JPEG", {"quality": 80}),
        ("RGB", "TIFF", {}),
        ("RGB", "TIFF", {"compression": "tiff_lzw"}),
        ("RGB", "BMP", {}),
        ("P", "GIF", {}),
    ):
        array = rng.integers(0, 255, (12, 9, 3), dtype=np.uint8)
        image = Image.fromarray(array).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        yield b"\x00" + buffer.getvalue()


if __name__ == "__main__":
    run("decode", target, seeds())
