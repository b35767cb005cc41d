"""tifffile path of :mod:`hemascope.imaging.decode`: TIFF variants Pillow cannot read faithfully.

Pillow drops the low byte of multi-sample TIFFs with more than 8 bits per sample and ignores white-is-zero
for them; it also cannot open some TIFFs at all. Those are decoded here with tifffile: only the first page,
grey or RGB (white-is-zero inverted), with an optional alpha channel (composited over white), EXIF-style
orientation applied. Strips and tiles cut short are rejected (tifffile would zero-fill them). Internal to
the decoder; the public API is :mod:`hemascope.imaging.decode`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image, ImageFile, TiffImagePlugin

from hemascope.imaging.failures import corrupt, mapped_errors, unsupported
from hemascope.imaging.samples import RgbArray, composite_over_white, gray_to_rgb, to_uint8

PixelCountCheck = Callable[[int, int], None]
"""Called with ``(width, height)`` from the page header before pixel data is decoded; raises to reject."""

_MAX_TIFF_SAMPLES: Final = 4  # samples per pixel the tifffile path accepts (RGBA)
_TAG_BITS_PER_SAMPLE: Final = 258
_TAG_PHOTOMETRIC: Final = 262
_TAG_ORIENTATION: Final = 274
_EXTRA_SAMPLE_ASSOCIATED_ALPHA: Final = 1
_EXTRA_SAMPLE_UNASSOCIATED_ALPHA: Final = 2
_ALPHA_EXTRA_SAMPLES: Final = frozenset({_EXTRA_SAMPLE_ASSOCIATED_ALPHA, _EXTRA_SAMPLE_UNASSOCIATED_ALPHA})
_TIFF_PHOTOMETRICS: Final = frozenset(
    int(value)
    for value in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE, tifffile.PHOTOMETRIC.RGB)
)
_ORIENTATION_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def needs_tifffile(image: ImageFile.ImageFile) -> bool:
    """Pillow reads TIFFs with more than 8 bits per sample unfaithfully when they have several samples per
    pixel (it drops the low byte) or are white-is-zero (it ignores the inversion)."""
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return False
    bits = image.tag_v2.get(_TAG_BITS_PER_SAMPLE, (8,))
    bits_tuple = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
    if max(int(b) for b in bits_tuple) <= 8:
        return False
    white_is_zero = image.tag_v2.get(_TAG_PHOTOMETRIC) == tifffile.PHOTOMETRIC.MINISWHITE
    return len(bits_tuple) > 1 or white_is_zero


@dataclass(frozen=True)
class _TiffPage:
    samples: NDArray[Any]  # H x W x S
    photometric: int
    extra_sample: int  # TIFF ExtraSamples value of the first extra channel, 0 when none
    orientation: int


def decode_with_tifffile(data: bytes, check_pixel_count: PixelCountCheck) -> tuple[RgbArray, str]:
    """Decode the first page of a TIFF: C-contiguous RGB pixels and a Pillow-like source mode name."""
    with mapped_errors("TIFF"):
        page = _read_first_tiff_page(data, check_pixel_count)
        pixels = _tiff_to_rgb(page)
    transpose = _ORIENTATION_TRANSPOSE.get(page.orientation)
    if transpose is not None:
        pixels = np.asarray(Image.fromarray(pixels).transpose(transpose), dtype=np.uint8)
    return np.ascontiguousarray(pixels), _tiff_source_mode(page.samples)


def _read_first_tiff_page(data: bytes, check_pixel_count: PixelCountCheck) -> _TiffPage:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        width, height = int(page.imagewidth), int(page.imagelength)
        check_pixel_count(width, height)
        if math.prod(page.shape) > _MAX_TIFF_SAMPLES * width * height:
            raise unsupported("TIFF pages with over 4 samples per pixel, or volumes, are not supported.")
        _check_tiff_segments(page, len(data))
        samples = _to_yxs(page.asarray(), page.axes)
        extras = tuple(page.extrasamples)
        orientation = page.tags.valueof(_TAG_ORIENTATION, 1)
        return _TiffPage(
            samples=samples,
            photometric=int(page.photometric) if isinstance(page.photometric, int) else -1,
            extra_sample=int(extras[0]) if extras else 0,
            orientation=int(orientation) if isinstance(orientation, int) else 1,
        )


def _check_tiff_segments(page: tifffile.TiffPage, file_size: int) -> None:
    """tifffile zero-fills strips and tiles that are cut short, so check they are all inside the file."""
    offsets, counts = page.dataoffsets, page.databytecounts
    if any(offset + count > file_size for offset, count in zip(offsets, counts, strict=False)):
        raise corrupt("TIFF", "image data runs past the end of the file (it is truncated)")
    if page.compression == tifffile.COMPRESSION.NONE and sum(counts) < page.nbytes:
        raise corrupt("TIFF", "the uncompressed image data is shorter than the image size")


def _to_yxs(array: NDArray[Any], axes: str) -> NDArray[Any]:
    """Reorder a page array to Y, X, S; keep index 0 of any other axis (depth, ...)."""
    for axis in reversed(range(len(axes))):
        if axes[axis] not in "YXS":
            array = np.take(array, 0, axis=axis)
    kept = "".join(a for a in axes if a in "YXS")
    if "S" not in kept:
        array = array[..., np.newaxis]
        kept += "S"
    if set(kept) != set("YXS"):
        raise unsupported(f"TIFF pages with axes {axes!r} are not supported.")
    return np.moveaxis(array, [kept.index("Y"), kept.index("X"), kept.index("S")], [0, 1, 2])


def _tiff_to_rgb(page: _TiffPage) -> RgbArray:
    if page.photometric not in _TIFF_PHOTOMETRICS:
        raise unsupported(f"TIFF images with photometric interpretation {page.photometric} are unsupported.")
    photometric = tifffile.PHOTOMETRIC(page.photometric)
    color_channels = 3 if photometric == tifffile.PHOTOMETRIC.RGB else 1
    if page.samples.shape[2] < color_channels:
        raise corrupt("TIFF", "an RGB image has fewer than 3 samples per pixel")
    scaled = to_uint8(page.samples)
    color = scaled[..., :color_channels]
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        color = 255 - color
    rgb = color if color_channels == 3 else gray_to_rgb(color[..., 0])
    has_alpha = scaled.shape[2] > color_channels and page.extra_sample in _ALPHA_EXTRA_SAMPLES
    if not has_alpha:
        return rgb
    premultiplied = page.extra_sample == _EXTRA_SAMPLE_ASSOCIATED_ALPHA
    return composite_over_white(np.dstack([rgb, scaled[..., color_channels]]), premultiplied=premultiplied)


def _tiff_source_mode(samples: NDArray[Any]) -> str:
    """A Pillow-like mode name for what tifffile decoded: ``"I;16"``, ``"RGB;16"``, ``"RGBA;32F"``, ..."""
    channels = samples.shape[2]
    dtype = samples.dtype
    if channels == 1:
        if dtype == np.uint8:
            return "L"
        if dtype == np.uint16:
            return "I;16"
        return "F" if dtype.kind == "f" else "I"
    base = {2: "LA", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}CH")
    suffix = f"{dtype.itemsize * 8}{'F' if dtype.kind == 'f' else ''}"
    return base if suffix == "8" else f"{base};{suffix}"
