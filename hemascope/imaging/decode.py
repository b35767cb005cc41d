"""Decode and validate uploaded images into H x W x 3 uint8 RGB arrays.

Only JPEG, PNG, TIFF and BMP are accepted; the format is detected from the content, never from the media
type, which is only cross-checked. Every failure is raised as :class:`~hemascope.errors.InvalidImage` with
one of the ``REASON_*`` codes below; no Pillow or tifffile exception escapes, and messages never contain
image bytes.

Safety rules:

* the encoded size is checked first, then the pixel count declared by the header, *before* any pixel data is
  decoded (decompression bombs are rejected without allocating the image);
* truncated files are errors: Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay ``False`` (decoding
  refuses to run with :class:`~hemascope.errors.ConfigurationError` otherwise);
* every PNG chunk CRC is verified (Pillow does not check the CRCs of image data chunks);
* Pillow's global ``Image.MAX_IMAGE_PIXELS`` is never changed.

Conversion rules: EXIF orientation is applied for JPEG and TIFF; transparent images are composited over
white; 16-bit samples are scaled with rounding (``v * 255 / 65535``); TIFF variants Pillow cannot read
faithfully (e.g. 16-bit RGB) are decoded with tifffile. Only the first page of a multi-page TIFF is used.
No colour management is done (embedded ICC profiles are ignored).
"""

from __future__ import annotations

import io
import logging
import math
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, TiffImagePlugin, UnidentifiedImageError

from hemascope.errors import ConfigurationError, HemascopeError, InvalidImage

RgbArray = NDArray[np.uint8]

REASON_EMPTY: Final = "EMPTY_IMAGE"
REASON_TOO_LARGE: Final = "IMAGE_TOO_LARGE"
REASON_UNSUPPORTED: Final = "UNSUPPORTED_FORMAT"
REASON_MISMATCH: Final = "MEDIA_TYPE_MISMATCH"
REASON_TOO_MANY_PIXELS: Final = "TOO_MANY_PIXELS"
REASON_CORRUPT: Final = "CORRUPT_IMAGE"

SUPPORTED_FORMATS: Final = ("JPEG", "PNG", "TIFF", "BMP")
SUPPORTED_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "image/jpeg": "JPEG",
        "image/jpg": "JPEG",
        "image/png": "PNG",
        "image/tiff": "TIFF",
        "image/bmp": "BMP",
        "image/x-ms-bmp": "BMP",
    }
)

_SUPPORTED_TEXT: Final = "JPEG, PNG, TIFF or BMP"
_FORMAT_ALIASES: Final = {"MPO": "JPEG"}  # a JPEG with a multi-picture header; we decode its first image
_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_PNG_SIGNATURE_LEN: Final = 8
_ORIENTED_FORMATS: Final = frozenset({"JPEG", "TIFF"})
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_KEYED_TRANSPARENCY_MODES: Final = frozenset({"P", "L", "RGB"})
_DECODER_LOGGERS: Final = ("tifffile", "PIL.ImageFile", "PIL.PngImagePlugin", "PIL.TiffImagePlugin")
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


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every decoded image."""

    max_bytes: int = 20 * 1024 * 1024
    """Largest accepted encoded size, in bytes."""
    max_pixels: int = 40_000_000
    """Largest accepted ``width * height``, checked from the header before pixel data is decoded."""


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded image: RGB pixels plus where they came from."""

    pixels: RgbArray
    """H x W x 3, uint8, RGB, C-contiguous, EXIF orientation already applied."""
    format: str
    """Detected container format: ``"JPEG"``, ``"PNG"``, ``"TIFF"`` or ``"BMP"``."""
    source_mode: str
    """Pillow mode before conversion (``"RGB"``, ``"L"``, ``"I;16"``, ...); ``"RGB;16"`` style for
    multi-channel TIFFs with more than 8 bits per sample, which are decoded with tifffile."""

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


# ----------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), media_type: str = "") -> DecodedImage:
    """Validate ``data`` and decode it to RGB pixels.

    ``media_type`` (e.g. ``"image/png"``, parameters and case ignored) is optional; when given it must be a
    supported type and agree with the detected content. Raises :class:`InvalidImage` on any problem.
    """
    _check_encoded_size(data, limits)
    declared = _declared_format(media_type)
    _require_strict_loading()
    sniffed = _sniff_format(data)
    with _quiet_decoder_logs(), _mapped_errors(sniffed):
        return _decode(data, limits, declared, sniffed)


def _decode(data: bytes, limits: ImageLimits, declared: str | None, sniffed: str | None) -> DecodedImage:
    image = _open_with_pillow(data, sniffed)
    if image is None:
        return _decode_with_tifffile(data, limits, declared)
    with image:
        return _decode_opened(image, data, limits, declared)


# ----------------------------------------------------------------------
# Checks done before decoding
# ----------------------------------------------------------------------


def _check_encoded_size(data: bytes, limits: ImageLimits) -> None:
    if not data:
        raise InvalidImage("The image is empty (0 bytes); send the encoded image file.", reason=REASON_EMPTY)
    if len(data) > limits.max_bytes:
        raise InvalidImage(
            f"The image is {len(data)} bytes ({len(data) / 2**20:.1f} MiB); the limit is {limits.max_bytes} "
            f"bytes ({limits.max_bytes / 2**20:.1f} MiB). Send a smaller or more compressed image.",
            reason=REASON_TOO_LARGE,
        )


def _declared_format(media_type: str) -> str | None:
    """Map a media type to a format name; ``None`` when no media type was given."""
    essence = media_type.split(";", 1)[0].strip().lower()
    if not essence:
        return None
    try:
        return SUPPORTED_MEDIA_TYPES[essence]
    except KeyError:
        raise InvalidImage(
            f"Media type {essence!r} is not supported; use one of: {', '.join(SUPPORTED_MEDIA_TYPES)} "
            f"({_SUPPORTED_TEXT} images).",
            reason=REASON_UNSUPPORTED,
        ) from None


def _check_media_type(declared: str | None, detected: str) -> None:
    if declared is not None and declared != detected:
        raise InvalidImage(
            f"The media type says {declared} but the content is a {detected} image; "
            "send the matching media type or leave it empty.",
            reason=REASON_MISMATCH,
        )


def _check_pixel_count(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImage(
            f"The image header declares an empty image ({width} x {height} pixels).", reason=REASON_CORRUPT
        )
    if width * height > limits.max_pixels:
        raise InvalidImage(
            f"The image is {width} x {height} = {width * height} pixels; the limit is {limits.max_pixels} "
            "pixels. Downscale the image before sending it.",
            reason=REASON_TOO_MANY_PIXELS,
        )


def _require_strict_loading() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigurationError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set to True somewhere in this process; it would let "
            "truncated images through as partly grey pictures. Remove that setting."
        )


def _sniff_format(data: bytes) -> str | None:
    """Guess the format from the magic bytes, only to tell 'corrupt' from 'not an image we support'."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def _verify_png_chunks(data: bytes) -> None:
    """Walk the PNG chunks up to IEND and check their lengths and CRCs (C speed per chunk)."""
    view = memoryview(data)
    position = _PNG_SIGNATURE_LEN
    index = 0
    while True:
        if position + 12 > len(data):
            raise _corrupt("PNG", "the file ends before the IEND chunk (it is truncated)")
        length, chunk_type = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            raise _corrupt("PNG", f"chunk #{index} runs past the end of the file (it is truncated)")
        (stored_crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[position + 4 : end - 4]) != stored_crc:
            raise _corrupt("PNG", f"chunk #{index} at byte offset {position} has a bad CRC")
        if chunk_type == b"IEND":
            return
        position = end
        index += 1


# ----------------------------------------------------------------------
# Error mapping
# ----------------------------------------------------------------------


def _corrupt(format_name: str | None, detail: str) -> InvalidImage:
    kind = f"{format_name} image" if format_name else "image"
    return InvalidImage(f"The {kind} is corrupt or truncated: {detail}.", reason=REASON_CORRUPT)


def _unsupported(detail: str) -> InvalidImage:
    return InvalidImage(
        f"{detail} Supported formats are {_SUPPORTED_TEXT}.",
        reason=REASON_UNSUPPORTED,
    )


def _describe(exc: BaseException) -> str:
    """Describe a decoder failure without quoting the decoder's message (it may hold image bytes)."""
    if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
        return "the file ends before all pixel data was read (it is truncated)"
    return f"the decoder failed ({type(exc).__name__})"


@contextmanager
def _mapped_errors(format_name: str | None) -> Iterator[None]:
    """Turn any decoder exception raised inside the block into :class:`InvalidImage`."""
    try:
        yield
    except (HemascopeError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            "The image header declares far more pixels than allowed (possible decompression bomb). "
            "Downscale the image before sending it.",
            reason=REASON_TOO_MANY_PIXELS,
        ) from exc
    except Exception as exc:
        raise _corrupt(format_name, _describe(exc)) from exc


class _QuietWhileDecoding(logging.Filter):
    """Drops decoder log records emitted by a thread while it is inside :func:`decode_image`.

    tifffile (and Pillow's TIFF/PNG plugins) log malformed tags they meet, tifffile sometimes quoting tag
    contents; for untrusted uploads those records are noise at best and leak file content at worst. The
    rejection itself is reported through :class:`InvalidImage`. Other threads and callers are unaffected.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_DECODING, "active", False)


_DECODING = threading.local()
_QUIET_FILTER = _QuietWhileDecoding()
for _logger_name in _DECODER_LOGGERS:
    logging.getLogger(_logger_name).addFilter(_QUIET_FILTER)


@contextmanager
def _quiet_decoder_logs() -> Iterator[None]:
    previous = getattr(_DECODING, "active", False)
    _DECODING.active = True
    try:
        yield
    finally:
        _DECODING.active = previous


# ----------------------------------------------------------------------
# Pillow path
# ----------------------------------------------------------------------


def _open_with_pillow(data: bytes, sniffed: str | None) -> ImageFile.ImageFile | None:
    """Open (header only). ``None`` means: a TIFF Pillow cannot identify, to be tried with tifffile."""
    try:
        return Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
    except UnidentifiedImageError:
        if sniffed == "TIFF":
            return None
        if sniffed is not None:
            raise _corrupt(sniffed, "its header could not be read") from None
        raise _unsupported("The data is not an image in a supported format.") from None


def _decode_opened(
    image: ImageFile.ImageFile, data: bytes, limits: ImageLimits, declared: str | None
) -> DecodedImage:
    format_name = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    _check_media_type(declared, format_name)
    _check_pixel_count(image.width, image.height, limits)
    if format_name == "TIFF":
        return _decode_tiff(image, data, limits, declared)
    if format_name == "PNG":
        _verify_png_chunks(data)
    source_mode = image.mode
    with _mapped_errors(format_name):
        pixels = _pillow_pixels(image, format_name)
    return DecodedImage(pixels=pixels, format=format_name, source_mode=source_mode)


def _decode_tiff(
    image: ImageFile.ImageFile, data: bytes, limits: ImageLimits, declared: str | None
) -> DecodedImage:
    """Decode a TIFF with Pillow when it is faithful, otherwise (or when Pillow fails) with tifffile."""
    if not _needs_tifffile(image):
        source_mode = image.mode
        try:
            with _mapped_errors("TIFF"):
                pixels = _pillow_pixels(image, "TIFF")
            return DecodedImage(pixels=pixels, format="TIFF", source_mode=source_mode)
        except InvalidImage as exc:
            if exc.reason != REASON_CORRUPT:
                raise
    return _decode_with_tifffile(data, limits, declared)


def _needs_tifffile(image: ImageFile.ImageFile) -> bool:
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


def _pillow_pixels(image: ImageFile.ImageFile, format_name: str) -> RgbArray:
    image.load()
    if format_name in _ORIENTED_FORMATS:
        ImageOps.exif_transpose(image, in_place=True)
    return np.ascontiguousarray(_pillow_to_rgb(image))


def _pillow_to_rgb(image: Image.Image) -> RgbArray:
    mode = image.mode
    if mode in _ALPHA_MODES or (mode in _KEYED_TRANSPARENCY_MODES and "transparency" in image.info):
        return _composite_over_white(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("L", "1"):
        return _gray_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))
    if mode in ("I", "F") or mode.startswith("I;"):
        return _gray_to_rgb(_to_uint8(np.asarray(image)))
    return _convert_other_mode(image)


def _convert_other_mode(image: Image.Image) -> RgbArray:
    """CMYK, YCbCr, palette without transparency and other modes Pillow can convert itself."""
    try:
        converted = image.convert("RGB")
    except ValueError:
        raise _unsupported(f"Images with colour mode {image.mode!r} are not supported.") from None
    return np.array(converted, dtype=np.uint8)


# ----------------------------------------------------------------------
# tifffile path (TIFF variants Pillow cannot read faithfully)
# ----------------------------------------------------------------------


@dataclass(frozen=True)
class _TiffPage:
    samples: NDArray[Any]  # H x W x S
    photometric: int
    extra_sample: int  # TIFF ExtraSamples value of the first extra channel, 0 when none
    orientation: int


def _decode_with_tifffile(data: bytes, limits: ImageLimits, declared: str | None) -> DecodedImage:
    _check_media_type(declared, "TIFF")
    with _mapped_errors("TIFF"):
        page = _read_first_tiff_page(data, limits)
        pixels = _tiff_to_rgb(page)
    transpose = _ORIENTATION_TRANSPOSE.get(page.orientation)
    if transpose is not None:
        pixels = np.asarray(Image.fromarray(pixels).transpose(transpose), dtype=np.uint8)
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels), format="TIFF", source_mode=_tiff_source_mode(page.samples)
    )


def _read_first_tiff_page(data: bytes, limits: ImageLimits) -> _TiffPage:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        width, height = int(page.imagewidth), int(page.imagelength)
        _check_pixel_count(width, height, limits)
        if math.prod(page.shape) > _MAX_TIFF_SAMPLES * width * height:
            raise _unsupported("TIFF pages with over 4 samples per pixel, or volumes, are not supported.")
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
        raise _corrupt("TIFF", "image data runs past the end of the file (it is truncated)")
    if page.compression == tifffile.COMPRESSION.NONE and sum(counts) < page.nbytes:
        raise _corrupt("TIFF", "the uncompressed image data is shorter than the image size")


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
        raise _unsupported(f"TIFF pages with axes {axes!r} are not supported.")
    return np.moveaxis(array, [kept.index("Y"), kept.index("X"), kept.index("S")], [0, 1, 2])


def _tiff_to_rgb(page: _TiffPage) -> RgbArray:
    if page.photometric not in _TIFF_PHOTOMETRICS:
        raise _unsupported(f"TIFF images with photometric interpretation {page.photometric} are unsupported.")
    photometric = tifffile.PHOTOMETRIC(page.photometric)
    color_channels = 3 if photometric == tifffile.PHOTOMETRIC.RGB else 1
    if page.samples.shape[2] < color_channels:
        raise _corrupt("TIFF", "an RGB image has fewer than 3 samples per pixel")
    scaled = _to_uint8(page.samples)
    color = scaled[..., :color_channels]
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        color = 255 - color
    rgb = color if color_channels == 3 else _gray_to_rgb(color[..., 0])
    has_alpha = scaled.shape[2] > color_channels and page.extra_sample in _ALPHA_EXTRA_SAMPLES
    if not has_alpha:
        return rgb
    premultiplied = page.extra_sample == _EXTRA_SAMPLE_ASSOCIATED_ALPHA
    return _composite_over_white(np.dstack([rgb, scaled[..., color_channels]]), premultiplied=premultiplied)


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


# ----------------------------------------------------------------------
# Sample conversion (numpy, no Python loops over pixels)
# ----------------------------------------------------------------------


def _to_uint8(values: NDArray[Any]) -> RgbArray:
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


def _gray_to_rgb(gray: NDArray[np.uint8]) -> RgbArray:
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def _composite_over_white(rgba: NDArray[np.uint8], *, premultiplied: bool = False) -> RgbArray:
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
