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

This module is the public API and the validation steps; the work is done by internal sibling modules:
:mod:`~hemascope.imaging.formats` (format sniffing, PNG CRCs), :mod:`~hemascope.imaging.pillow` (Pillow
path), :mod:`~hemascope.imaging.tiff` (tifffile path), :mod:`~hemascope.imaging.samples` (sample
conversion), :mod:`~hemascope.imaging.failures` (reason codes, error mapping) and
:mod:`~hemascope.imaging.decoder_logs` (silencing decoder logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from PIL import ImageFile

from hemascope.errors import ConfigurationError, InvalidImage
from hemascope.imaging.decoder_logs import quiet_decoder_logs
from hemascope.imaging.failures import (
    REASON_CORRUPT,
    REASON_EMPTY,
    REASON_MISMATCH,
    REASON_TOO_LARGE,
    REASON_TOO_MANY_PIXELS,
    REASON_UNSUPPORTED,
    SUPPORTED_TEXT,
    mapped_errors,
)
from hemascope.imaging.formats import FORMAT_ALIASES, SUPPORTED_FORMATS, sniff_format, verify_png_chunks
from hemascope.imaging.pillow import open_with_pillow, pillow_pixels
from hemascope.imaging.samples import RgbArray
from hemascope.imaging.tiff import decode_with_tifffile, needs_tifffile

__all__ = [
    "REASON_CORRUPT",
    "REASON_EMPTY",
    "REASON_MISMATCH",
    "REASON_TOO_LARGE",
    "REASON_TOO_MANY_PIXELS",
    "REASON_UNSUPPORTED",
    "SUPPORTED_FORMATS",
    "SUPPORTED_MEDIA_TYPES",
    "DecodedImage",
    "ImageHeader",
    "ImageLimits",
    "RgbArray",
    "decode_image",
    "probe_image",
]

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


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before any pixel data is read."""

    format: str
    """Detected container format, as in :attr:`DecodedImage.format`."""
    width: int
    """Width as stored, before EXIF orientation."""
    height: int
    """Height as stored, before EXIF orientation."""


# ----------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), media_type: str = "") -> DecodedImage:
    """Validate ``data`` and decode it to RGB pixels.

    ``media_type`` (e.g. ``"image/png"``, parameters and case ignored) is optional; when given it must be a
    supported type and agree with the detected content. Raises :class:`InvalidImage` on any problem.
    """
    _check_encoded_size(data, limits)
    declared = _declared_format(media_type)
    _require_strict_loading()
    sniffed = sniff_format(data)
    with quiet_decoder_logs(), mapped_errors(sniffed):
        return _decode(data, limits, declared, sniffed)


def probe_image(data: bytes, limits: ImageLimits = ImageLimits(), media_type: str = "") -> ImageHeader | None:
    """The checks :func:`decode_image` makes before it reads any pixel data: the encoded size, the media
    type, the format and header, and the pixel count the header declares; raises :class:`InvalidImage` as
    :func:`decode_image` would for each. Costs a header parse, not a decode, so data whose header is sound but
    whose pixel data is not (a truncated JPEG, a PNG chunk with a bad CRC) passes: only a decode finds that.
    ``None``: a TIFF that only tifffile reads, whose header this does not parse.
    """
    _check_encoded_size(data, limits)
    declared = _declared_format(media_type)
    sniffed = sniff_format(data)
    with quiet_decoder_logs(), mapped_errors(sniffed):
        image = open_with_pillow(data, sniffed)
        if image is None:
            return None
        with image:
            format_name = FORMAT_ALIASES.get(image.format or "", image.format or "")
            _check_media_type(declared, format_name)
            _check_pixel_count(image.width, image.height, limits)
            return ImageHeader(format_name, image.width, image.height)


def _decode(data: bytes, limits: ImageLimits, declared: str | None, sniffed: str | None) -> DecodedImage:
    image = open_with_pillow(data, sniffed)
    if image is None:
        return _decode_with_tifffile(data, limits, declared)
    with image:
        return _decode_opened(image, data, limits, declared)


def _decode_opened(
    image: ImageFile.ImageFile, data: bytes, limits: ImageLimits, declared: str | None
) -> DecodedImage:
    format_name = FORMAT_ALIASES.get(image.format or "", image.format or "")
    _check_media_type(declared, format_name)
    _check_pixel_count(image.width, image.height, limits)
    if format_name == "TIFF":
        return _decode_tiff(image, data, limits, declared)
    if format_name == "PNG":
        verify_png_chunks(data)
    source_mode = image.mode
    with mapped_errors(format_name):
        pixels = pillow_pixels(image, format_name)
    return DecodedImage(pixels=pixels, format=format_name, source_mode=source_mode)


def _decode_tiff(
    image: ImageFile.ImageFile, data: bytes, limits: ImageLimits, declared: str | None
) -> DecodedImage:
    """Decode a TIFF with Pillow when it is faithful, otherwise (or when Pillow fails) with tifffile."""
    if not needs_tifffile(image):
        source_mode = image.mode
        try:
            with mapped_errors("TIFF"):
                pixels = pillow_pixels(image, "TIFF")
            return DecodedImage(pixels=pixels, format="TIFF", source_mode=source_mode)
        except InvalidImage as exc:
            if exc.reason != REASON_CORRUPT:
                raise
    return _decode_with_tifffile(data, limits, declared)


def _decode_with_tifffile(data: bytes, limits: ImageLimits, declared: str | None) -> DecodedImage:
    _check_media_type(declared, "TIFF")
    pixels, source_mode = decode_with_tifffile(data, lambda w, h: _check_pixel_count(w, h, limits))
    return DecodedImage(pixels=pixels, format="TIFF", source_mode=source_mode)


# ----------------------------------------------------------------------
# Validation steps
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
            f"({SUPPORTED_TEXT} images).",
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
