"""Sample conversion for :mod:`hemascope.imaging.decode`: any sample type to uint8 RGB (numpy, no Python loops
over pixels).

16-bit samples are scaled with rounding (``v * 255 / 65535``); wider integers are read as 16-bit data; floats
are scaled from the range they fit (0..1, 0..255 or 0..65535). Transparent pixels are composited over white.
Internal to the decoder; the public API is :mod:`hemascope.imaging.decode`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

RgbArray = NDArray[np.uint8]


def to_uint8(values: NDArray[Any]) -> RgbArray:
    """Scale any sample type to uint8: 8-bit as is, 16-bit and wider integers to 0..65535 range, floats."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype.kind == "f":
        return _float_to_uint8(values)
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return _scale_16bit(values)
    return _int_to_uint8(values)


def _scale_16bit(values: NDArray[Any]) -> RgbArray:
    """Round ``v * 255 / 65535`` exactly, in integer arithmetic."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _int_to_uint8(values: NDArray[Any]) -> RgbArray:
    """Integers of any width are read as 16-bit data: negatives become 0, values above 65535 become 255."""
    return _scale_16bit(np.clip(values, 0, 65535))


def _float_to_uint8(values: NDArray[Any]) -> RgbArray:
    """Floats have no fixed range: use 0..1 when all values fit, else 0..255, else 0..65535 (clipped).

    NaN becomes 0; infinities clip to the ends of the range.
    """
    data = values.astype(np.float64)
    finite = data[np.isfinite(data)]
    peak = float(finite.max()) if finite.size else 0.0
    full_scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
    data = np.nan_to_num(data, nan=0.0, posinf=full_scale, neginf=0.0)
    return np.rint(np.clip(data, 0.0, full_scale) * (255.0 / full_scale)).astype(np.uint8)


def gray_to_rgb(gray: NDArray[np.uint8]) -> RgbArray:
    """Repeat an H x W grey plane into H x W x 3."""
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def composite_over_white(rgba: NDArray[np.uint8], *, premultiplied: bool = False) -> RgbArray:
    """Alpha-composite over a white background (microscopy backgrounds are bright), rounding to nearest.

    Straight alpha: ``round((c * a + 255 * (255 - a)) / 255) == 255 - round(a * (255 - c) / 255)``, with the
    division done exactly in uint16 shifts (no slow integer division).
    """
    color = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if premultiplied:
        return np.minimum(color, alpha) + (255 - alpha)
    darkening = (255 - color).astype(np.uint16)
    darkening *= alpha
    darkening += 128
    darkening += darkening >> 8
    darkening >>= 8
    return (255 - darkening).astype(np.uint8)
