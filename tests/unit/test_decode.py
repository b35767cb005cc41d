"""Tests for hemascope.imaging.decode: every accepted variant and every rejection reason."""

from __future__ import annotations

import io
import logging
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from PIL import Image, ImageFile, PngImagePlugin

from hemascope.errors import ConfigurationError, InvalidImage
from hemascope.imaging.decode import SUPPORTED_MEDIA_TYPES, DecodedImage, ImageLimits, decode_image

BASOPHIL_DIR = Path("/work/shared/data/bloodcells-5class/train/basophil")
SUPPORTED_TEXT = "JPEG, PNG, TIFF or BMP"

# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _random_rgb(height: int = 24, width: int = 32, seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(array: NDArray[Any], fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _encode_image(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tiff(array: NDArray[Any], **options: Any) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)


def _crafted_png(width: int, height: int) -> bytes:
    """A valid-looking 8-bit RGB PNG whose IHDR claims width x height but whose IDAT is tiny."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk_offsets(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Map chunk type -> (offset of the chunk, payload length) for the first chunk of each type."""
    offsets: dict[bytes, tuple[int, int]] = {}
    position = 8
    while position < len(data):
        length, chunk_type = struct.unpack_from(">I4s", data, position)
        offsets.setdefault(chunk_type, (position, length))
        position += 12 + length
    return offsets


def _outcome(data: bytes) -> str:
    """``"OK"`` for a good decode, else the reason of the InvalidImage; any other exception propagates."""
    try:
        decoded = decode_image(data)
    except InvalidImage as exc:
        return exc.reason
    return "OK" if decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3 else "MALFORMED"


def _reason(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(InvalidImage) as excinfo:
        decode_image(data, **kwargs)
    return excinfo.value.reason


def _real_jpeg() -> Path:
    paths = sorted(BASOPHIL_DIR.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no sample JPEGs under {BASOPHIL_DIR}")
    return paths[0]


def _assert_well_formed(decoded: DecodedImage, height: int, width: int) -> None:
    assert decoded.pixels.shape == (height, width, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.flags.c_contiguous
    assert (decoded.height, decoded.width) == (height, width)


# ----------------------------------------------------------------------------------------------------------
# Accepted formats
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_roundtrip_exactly(fmt: str) -> None:
    array = _random_rgb()
    decoded = decode_image(_encode(array, fmt))
    _assert_well_formed(decoded, 24, 32)
    assert decoded.format == fmt
    assert decoded.source_mode == "RGB"
    np.testing.assert_array_equal(decoded.pixels, array)


def test_jpeg_decodes_close_to_source() -> None:
    array = np.full((16, 24, 3), (200, 40, 90), dtype=np.uint8)
    decoded = decode_image(_encode(array, "JPEG", quality=95))
    _assert_well_formed(decoded, 16, 24)
    assert decoded.format == "JPEG"
    assert np.abs(decoded.pixels.astype(int) - array.astype(int)).max() <= 4


def test_real_blood_cell_jpeg_decodes_to_its_true_size() -> None:
    path = _real_jpeg()
    with Image.open(path) as reference:
        width, height = reference.size
        expected = np.asarray(reference.convert("RGB"))
    decoded = decode_image(path.read_bytes(), media_type="image/jpeg")
    _assert_well_formed(decoded, height, width)
    assert decoded.format == "JPEG"
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_real_basophil_images_are_360_by_363() -> None:
    decoded = decode_image(_real_jpeg().read_bytes())
    assert decoded.pixels.shape == (363, 360, 3)


def test_pixels_are_writable_copies() -> None:
    decoded = decode_image(_encode(_random_rgb(), "PNG"))
    decoded.pixels[0, 0] = 0  # callers may normalise in place


# ----------------------------------------------------------------------------------------------------------
# Colour conversion
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
def test_grayscale_is_replicated_to_three_channels(fmt: str) -> None:
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    decoded = decode_image(_encode(gray, fmt))
    assert decoded.source_mode == "L"
    tolerance = 2 if fmt == "JPEG" else 0
    for channel in range(3):
        assert np.abs(decoded.pixels[..., channel].astype(int) - gray.astype(int)).max() <= tolerance


def test_bilevel_image_becomes_black_and_white() -> None:
    image = Image.new("1", (4, 2), 0)
    image.putpixel((1, 0), 1)
    decoded = decode_image(_encode_image(image, "PNG"))
    assert decoded.source_mode == "1"
    assert decoded.pixels[0, 1].tolist() == [255, 255, 255]
    assert decoded.pixels[0, 0].tolist() == [0, 0, 0]


def test_rgba_is_composited_over_white() -> None:
    rgba = np.array(
        [[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128], [200, 100, 0, 64]]],
        dtype=np.uint8,
    )
    decoded = decode_image(_encode(rgba, "PNG"))
    assert decoded.source_mode == "RGBA"
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]
    assert decoded.pixels[0, 1].tolist() == [10, 20, 30]
    assert decoded.pixels[0, 2].tolist() == [127, 127, 127]  # 255 * 127 / 255
    expected = [round((c * 64 + 255 * 191) / 255) for c in (200, 100, 0)]
    assert decoded.pixels[0, 3].tolist() == expected


def test_alpha_compositing_rounds_exactly_for_every_colour_and_alpha() -> None:
    color, alpha = np.meshgrid(np.arange(256), np.arange(256))  # rows: alpha, columns: colour value
    rgba = np.stack([color, color, 255 - color, alpha], axis=-1).astype(np.uint8)
    decoded = decode_image(_encode(rgba, "PNG")).pixels.astype(int)
    for channel, values in ((0, color), (2, 255 - color)):
        expected = np.rint((values * alpha + 255 * (255 - alpha)) / 255).astype(int)
        np.testing.assert_array_equal(decoded[..., channel], expected)


def test_gray_with_alpha_is_composited_over_white() -> None:
    image = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    decoded = decode_image(_encode_image(image, "PNG"))
    assert decoded.source_mode == "LA"
    assert decoded.pixels[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_rgba_tiff_is_composited_over_white() -> None:
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    decoded = decode_image(_encode(rgba, "TIFF"))
    assert decoded.pixels[0].tolist() == [[255, 255, 255], [10, 20, 30]]


def test_palette_image_is_converted_to_rgb() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    decoded = decode_image(_encode_image(image, "PNG"))
    assert decoded.source_mode == "P"
    assert decoded.pixels[0].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_palette_transparency_is_composited_over_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    decoded = decode_image(_encode_image(image, "PNG", transparency=0))
    assert decoded.pixels[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(_encode_image(image, "JPEG", quality=95))
    assert decoded.source_mode == "CMYK"
    red, green, blue = decoded.pixels[4, 4].astype(int).tolist()
    assert red > 240
    assert max(green, blue) < 15


SIXTEEN_BIT = np.array([[0, 128, 129, 1000, 32768, 65535]], dtype=np.uint16)
SIXTEEN_BIT_EXPECTED = [0, 0, 1, 4, 128, 255]  # round(v * 255 / 65535), not v >> 8


def test_sixteen_bit_gray_png_is_scaled_with_rounding() -> None:
    decoded = decode_image(_encode(SIXTEEN_BIT, "PNG"))
    assert decoded.source_mode.startswith("I;16")
    assert decoded.pixels[0, :, 0].tolist() == SIXTEEN_BIT_EXPECTED
    assert np.array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_sixteen_bit_gray_tiff_is_scaled_with_rounding(byteorder: str) -> None:
    decoded = decode_image(_tiff(SIXTEEN_BIT, byteorder=byteorder))
    assert decoded.format == "TIFF"
    assert decoded.source_mode.startswith("I;16")
    assert decoded.pixels[0].tolist() == [[v, v, v] for v in SIXTEEN_BIT_EXPECTED]


def test_sixteen_bit_rgb_tiff_keeps_full_precision() -> None:
    rgb = np.stack([SIXTEEN_BIT, SIXTEEN_BIT[:, ::-1], np.full_like(SIXTEEN_BIT, 1000)], axis=-1)
    decoded = decode_image(_tiff(rgb, photometric="rgb"), media_type="image/tiff")
    assert decoded.format == "TIFF"
    assert decoded.source_mode == "RGB;16"
    assert decoded.pixels[0, :, 0].tolist() == SIXTEEN_BIT_EXPECTED
    assert decoded.pixels[0, :, 1].tolist() == SIXTEEN_BIT_EXPECTED[::-1]
    assert decoded.pixels[0, :, 2].tolist() == [4] * 6  # 1000 >> 8 would give 3


def test_sixteen_bit_rgb_tiff_planar_and_compressed() -> None:
    rgb = np.stack([SIXTEEN_BIT] * 3, axis=0)
    data = _tiff(rgb, photometric="rgb", planarconfig="separate", compression="zlib")
    decoded = decode_image(data)
    assert decoded.pixels[0].tolist() == [[v, v, v] for v in SIXTEEN_BIT_EXPECTED]


def test_sixteen_bit_rgba_tiff_is_composited_over_white() -> None:
    rgba = np.array([[[0, 0, 0, 0], [65535, 0, 0, 65535]]], dtype=np.uint16)
    decoded = decode_image(_tiff(rgba, photometric="rgb", extrasamples=["unassalpha"]))
    assert decoded.source_mode == "RGBA;16"
    assert decoded.pixels[0].tolist() == [[255, 255, 255], [255, 0, 0]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_white_is_zero_tiff_is_inverted(dtype: type[np.unsignedinteger[Any]]) -> None:
    values = np.array([[0, np.iinfo(dtype).max]], dtype=dtype)
    decoded = decode_image(_tiff(values, photometric="miniswhite"))
    assert decoded.pixels[0, :, 0].tolist() == [255, 0]


def test_premultiplied_alpha_tiff_is_composited_over_white() -> None:
    rgba = np.array([[[0, 0, 0, 32896], [65535, 0, 0, 65535], [32896, 0, 0, 32896]]], dtype=np.uint16)
    decoded = decode_image(_tiff(rgba, photometric="rgb", extrasamples=["assocalpha"]))
    assert decoded.pixels[0].tolist() == [[127, 127, 127], [255, 0, 0], [255, 127, 127]]


def test_float_gray_tiff_in_unit_range() -> None:
    decoded = decode_image(_tiff(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    assert decoded.source_mode == "F"
    assert decoded.pixels[0, :, 0].tolist() == [0, 128, 255]


def test_int32_gray_tiff_is_clipped_to_sixteen_bit_range() -> None:
    decoded = decode_image(_tiff(np.array([[-5, 0, 65535, 70000]], dtype=np.int32)))
    assert decoded.source_mode == "I"
    assert decoded.pixels[0, :, 0].tolist() == [0, 0, 255, 255]


def test_multipage_tiff_uses_first_page() -> None:
    first, second = _random_rgb(seed=1), _random_rgb(seed=2)
    data = _tiff(np.stack([first, second]), photometric="rgb")
    np.testing.assert_array_equal(decode_image(data).pixels, first)
    data16 = _tiff(np.stack([first, second]).astype(np.uint16) * 257, photometric="rgb")
    np.testing.assert_array_equal(decode_image(data16).pixels, first)


# ----------------------------------------------------------------------------------------------------------
# Orientation
# ----------------------------------------------------------------------------------------------------------


def _top_red_bottom_blue(height: int = 16, width: int = 32) -> NDArray[np.uint8]:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[: height // 2] = (255, 0, 0)
    array[height // 2 :] = (0, 0, 255)
    return array


def test_jpeg_exif_orientation_6_rotates_clockwise() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_top_red_bottom_blue(), "JPEG", quality=95, exif=exif)
    decoded = decode_image(data)
    assert decoded.pixels.shape == (32, 16, 3)  # width and height swapped
    assert decoded.pixels[16, 14].tolist()[0] > 200  # the stored top (red) is now on the right
    assert decoded.pixels[16, 1].tolist()[2] > 200  # the stored bottom (blue) is now on the left


def test_png_orientation_is_not_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(_encode(_top_red_bottom_blue(), "PNG", exif=exif))
    assert decoded.pixels.shape == (16, 32, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_is_the_same_through_pillow_and_tifffile(orientation: int) -> None:
    array = _random_rgb(6, 10, seed=orientation)
    tag = [(274, "H", 1, orientation, True)]
    through_pillow = decode_image(_tiff(array, photometric="rgb", extratags=tag))
    through_tifffile = decode_image(_tiff(array.astype(np.uint16) * 257, photometric="rgb", extratags=tag))
    assert through_tifffile.source_mode == "RGB;16"
    np.testing.assert_array_equal(through_pillow.pixels, through_tifffile.pixels)
    assert through_pillow.pixels.flags.c_contiguous
    assert through_tifffile.pixels.flags.c_contiguous
    if orientation == 6:
        np.testing.assert_array_equal(through_pillow.pixels, np.rot90(array, k=-1))


# ----------------------------------------------------------------------------------------------------------
# Size limits
# ----------------------------------------------------------------------------------------------------------


def test_empty_bytes_are_rejected() -> None:
    assert _reason(b"") == "EMPTY_IMAGE"


def test_oversize_bytes_are_rejected_before_anything_else() -> None:
    limits = ImageLimits(max_bytes=1000)
    with pytest.raises(InvalidImage) as excinfo:
        decode_image(b"\x00" * 1001, limits=limits, media_type="application/nonsense")
    assert excinfo.value.reason == "IMAGE_TOO_LARGE"
    assert "1001" in excinfo.value.message
    assert "1000" in excinfo.value.message


def test_image_exactly_at_byte_limit_is_accepted() -> None:
    data = _encode(_random_rgb(), "PNG")
    assert decode_image(data, limits=ImageLimits(max_bytes=len(data))).format == "PNG"


@pytest.mark.parametrize(("width", "height"), [(20_000, 20_000), (7_000, 7_000), (1_000_000, 50)])
def test_png_header_bomb_is_rejected_fast(width: int, height: int) -> None:
    data = _crafted_png(width, height)
    assert len(data) < 200
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    reason = _reason(data)
    assert time.perf_counter() - started < 1.0
    assert reason == "TOO_MANY_PIXELS"
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS


def test_jpeg_header_bomb_is_rejected_fast() -> None:
    data = bytearray(_encode(_random_rgb(8, 8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 60_000, 60_000)
    started = time.perf_counter()
    assert _reason(bytes(data)) == "TOO_MANY_PIXELS"
    assert time.perf_counter() - started < 1.0


def test_pixel_limit_is_configurable() -> None:
    data = _encode(_random_rgb(20, 20), "PNG")
    assert _reason(data, limits=ImageLimits(max_pixels=399)) == "TOO_MANY_PIXELS"
    assert decode_image(data, limits=ImageLimits(max_pixels=400)).width == 20


def test_sixteen_bit_rgb_tiff_pixel_limit_applies_to_tifffile_path() -> None:
    data = _tiff(np.zeros((20, 20, 3), dtype=np.uint16), photometric="rgb")
    assert _reason(data, limits=ImageLimits(max_pixels=100)) == "TOO_MANY_PIXELS"


def test_pillow_bomb_warning_as_error_becomes_too_many_pixels() -> None:
    data = _crafted_png(10_000, 9_000)  # above Pillow's warning threshold, below its error threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _reason(data, limits=ImageLimits(max_pixels=10**9)) == "TOO_MANY_PIXELS"


def test_zero_width_png_is_corrupt() -> None:
    assert _reason(_crafted_png(0, 10)) == "CORRUPT_IMAGE"


# ----------------------------------------------------------------------------------------------------------
# Corrupt and unsupported data
# ----------------------------------------------------------------------------------------------------------


def test_truncated_real_jpeg_is_corrupt_not_grey_filled() -> None:
    data = _real_jpeg().read_bytes()
    with pytest.raises(InvalidImage) as excinfo:
        decode_image(data[: len(data) // 2])
    assert excinfo.value.reason == "CORRUPT_IMAGE"
    assert "truncated" in excinfo.value.message


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_truncated_lossless_images_are_corrupt(fmt: str) -> None:
    data = _encode(_random_rgb(), fmt)
    assert _reason(data[: len(data) // 2]) == "CORRUPT_IMAGE"


def test_truncated_sixteen_bit_rgb_tiff_is_corrupt() -> None:
    data = _tiff(np.zeros((20, 20, 3), dtype=np.uint16), photometric="rgb")
    assert _reason(data[: len(data) // 2]) == "CORRUPT_IMAGE"


def test_tiled_sixteen_bit_tiff_cut_at_a_tile_row_is_corrupt_not_zero_filled() -> None:
    data = _tiff(np.ones((40, 30, 3), dtype=np.uint16), photometric="rgb", tile=(16, 16))
    row_of_tile = 16 * 3 * 2
    assert decode_image(data).source_mode == "RGB;16"
    assert _reason(data[: len(data) - 8 * row_of_tile]) == "CORRUPT_IMAGE"


@pytest.mark.parametrize("chunk_type", [b"IHDR", b"IDAT", b"IEND"])
def test_png_with_bad_crc_is_corrupt(chunk_type: bytes) -> None:
    data = bytearray(_encode(_random_rgb(), "PNG"))
    offset, length = _png_chunk_offsets(bytes(data))[chunk_type]
    data[offset + 8 + length] ^= 0xFF  # first byte of the stored CRC
    assert _reason(bytes(data)) == "CORRUPT_IMAGE"


def test_png_with_damaged_image_data_is_corrupt() -> None:
    data = bytearray(_encode(_random_rgb(), "PNG"))
    offset, _ = _png_chunk_offsets(bytes(data))[b"IDAT"]
    data[offset + 20] ^= 0xFF
    assert _reason(bytes(data)) == "CORRUPT_IMAGE"


def test_decoder_log_records_are_silenced_during_decode(caplog: pytest.LogCaptureFixture) -> None:
    data = bytearray(_tiff(np.zeros((4, 4, 3), dtype=np.uint16), photometric="rgb"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        photometric_entry = tif.pages.first.tags[262].offset
    struct.pack_into("<H", data, photometric_entry + 8, 117)  # not a valid photometric interpretation
    with caplog.at_level(logging.DEBUG):
        with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
            tif.pages.first.asarray()
        assert any(record.name == "tifffile" for record in caplog.records)  # tifffile does complain
        caplog.clear()
        assert _reason(bytes(data)) == "UNSUPPORTED_FORMAT"
    assert not [r for r in caplog.records if r.name.startswith(("tifffile", "PIL"))]


def test_load_truncated_images_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConfigurationError):
        decode_image(_encode(_random_rgb(), "PNG"))


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(7).bytes(4096),
        b"hello, this is plain text and not an image\n" * 10,
        b"%PDF-1.7\n" + b"\x00" * 100,
    ],
    ids=["random", "text", "pdf"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidImage) as excinfo:
        decode_image(data)
    assert excinfo.value.reason == "UNSUPPORTED_FORMAT"
    assert SUPPORTED_TEXT in excinfo.value.message


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    assert _reason(_encode(_random_rgb(), fmt)) == "UNSUPPORTED_FORMAT"


def test_header_garbage_after_png_signature_is_corrupt_and_not_echoed() -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"SECRET-PATIENT-PAYLOAD" * 10
    with pytest.raises(InvalidImage) as excinfo:
        decode_image(data)
    assert excinfo.value.reason == "CORRUPT_IMAGE"
    assert "SECRET" not in excinfo.value.message


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "BMP"])
def test_random_corruption_never_leaks_raw_exceptions(fmt: str) -> None:
    source = _encode(_random_rgb(16, 16), fmt)
    rng = np.random.default_rng(len(fmt))
    for _ in range(60):
        data = bytearray(source)
        for position in rng.integers(0, len(data), size=3):
            data[position] = int(rng.integers(0, 256))
        cut = int(rng.integers(len(data) // 2, len(data) + 1))
        assert _outcome(bytes(data[:cut])) in {"OK", "CORRUPT_IMAGE", "UNSUPPORTED_FORMAT", "TOO_MANY_PIXELS"}


# ----------------------------------------------------------------------------------------------------------
# Media types
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("media_type", "fmt"), sorted(SUPPORTED_MEDIA_TYPES.items()))
def test_matching_media_types_are_accepted(media_type: str, fmt: str) -> None:
    assert decode_image(_encode(_random_rgb(), fmt), media_type=media_type).format == fmt


@pytest.mark.parametrize("media_type", ["IMAGE/PNG", " image/png ; charset=x", "image/png;foo=bar"])
def test_media_type_parameters_and_case_are_ignored(media_type: str) -> None:
    assert decode_image(_encode(_random_rgb(), "PNG"), media_type=media_type).format == "PNG"


@pytest.mark.parametrize("media_type", ["image/gif", "image/webp", "text/plain", "application/octet-stream"])
def test_unknown_media_types_are_unsupported(media_type: str) -> None:
    assert _reason(_encode(_random_rgb(), "PNG"), media_type=media_type) == "UNSUPPORTED_FORMAT"


MISMATCHES = [("PNG", "image/jpeg"), ("JPEG", "image/png"), ("BMP", "image/tiff"), ("TIFF", "image/bmp")]


@pytest.mark.parametrize(("fmt", "media_type"), MISMATCHES)
def test_media_type_mismatch_is_rejected(fmt: str, media_type: str) -> None:
    assert _reason(_encode(_random_rgb(), fmt), media_type=media_type) == "MEDIA_TYPE_MISMATCH"


def test_media_type_mismatch_for_tifffile_path() -> None:
    data = _tiff(np.zeros((4, 4, 3), dtype=np.uint16), photometric="rgb")
    assert _reason(data, media_type="image/png") == "MEDIA_TYPE_MISMATCH"


def test_png_with_text_chunk_decodes_identically() -> None:
    array = _random_rgb()
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "scanned on microscope 3")
    plain = decode_image(_encode(array, "PNG")).pixels
    annotated = decode_image(_encode(array, "PNG", pnginfo=info)).pixels
    np.testing.assert_array_equal(plain, annotated)
