"""Pillow path of :mod:`hemascope.imaging.decode`: open a JPEG, PNG, TIFF or BMP with Pillow and convert
its pixels to H x W x 3 uint8 RGB.

EXIF orientation is applied for JPEG and TIFF; transparent images (alpha channel or keyed transparency) are
composited over white; 16-bit, 32-bit and float grey images are scaled to 8 bits. Internal to the decoder;
the public API is :mod:`hemascope.imaging.decode`.
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from hemascope.imaging.failures import corrupt, unsupported
from hemascope.imaging.formats import SUPPORTED_FORMATS
from hemascope.imaging.samples import RgbArray, composite_over_white, gray_to_rgb, to_uint8

_ORIENTED_FORMATS: Final = frozenset({"JPEG", "TIFF"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_KEYED_TRANSPARENCY_MODES: Final = frozenset({"P", "L", "RGB"})


def open_with_pillow(data: bytes, sniffed: str | None) -> ImageFile.ImageFile | None:
    """Open (header only). ``None`` means: a TIFF Pillow cannot identify, to be tried with tifffile."""
    try:
        return Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
    except UnidentifiedImageError:
        if sniffed == "TIFF":
            return None
        if sniffed is not None:
            raise corrupt(sniffed, "its header could not be read") from None
        raise unsupported("The data is not an image in a supported format.") from None


def pillow_pixels(image: ImageFile.ImageFile, format_name: str) -> RgbArray:
    """Load the pixel data and return it as C-contiguous RGB, orientation applied."""
    image.load()
    if format_name in _ORIENTED_FORMATS:
        ImageOps.exif_transpose(image, in_place=True)
    return np.ascontiguousarray(_pillow_to_rgb(image))


def _pillow_to_rgb(image: Image.Image) -> RgbArray:
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in _KEYED_TRANSPARENCY_MODES and "transparency" in image.info):
        return composite_over_white(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("L", "1"):
        return gray_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))
    if mode in ("I", "F") or mode.startswith("I;"):
        return gray_to_rgb(to_uint8(np.asarray(image)))
    return _convert_other_mode(image)


def _convert_other_mode(image: Image.Image) -> RgbArray:
    """CMYK, YCbCr, palette without transparency and other modes Pillow can convert itself."""
    try:
        converted = image.convert("RGB")
    except ValueError:
        raise unsupported(f"Images with colour mode {image.mode!r} are not supported.") from None
    return np.array(converted, dtype=np.uint8)
