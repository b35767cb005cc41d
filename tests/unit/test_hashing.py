"""Tests for hemascope.imaging.hashing: same pixels hash the same whatever the container."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pytest
import tifffile
from numpy.typing import NDArray
from PIL import Image, PngImagePlugin

from hemascope.imaging.decode import decode_image
from hemascope.imaging.hashing import HASH_VERSION, content_hash


def _random_rgb(height: int = 24, width: int = 32, seed: int = 0) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(array: NDArray[np.uint8], fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _decoded_hash(data: bytes) -> str:
    return content_hash(decode_image(data).pixels)


def test_hash_is_a_sha256_hex_digest() -> None:
    digest = content_hash(_random_rgb())
    assert len(digest) == 64
    int(digest, 16)


def test_hash_is_stable_across_releases() -> None:
    """Pins the scheme: a change here invalidates every stored hash, so bump HASH_VERSION with it."""
    pixels = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    expected = hashlib.sha256(f"{HASH_VERSION}||u1|2x2x3|".encode() + pixels.tobytes()).hexdigest()
    assert HASH_VERSION == "px1"
    assert content_hash(pixels) == expected


def test_lossless_containers_hash_identically() -> None:
    array = _random_rgb()
    png = _decoded_hash(_encode(array, "PNG"))
    assert _decoded_hash(_encode(array, "BMP")) == png
    assert _decoded_hash(_encode(array, "TIFF")) == png
    assert _decoded_hash(_encode(array, "TIFF", compression="tiff_deflate")) == png
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="rgb", compression="zlib")
    assert _decoded_hash(buffer.getvalue()) == png
    assert png == content_hash(array)


def test_png_metadata_does_not_change_the_hash() -> None:
    array = _random_rgb()
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "scanner v2")
    info.add_text("Comment", "patient-free annotation", zip=True)
    with_text = _encode(array, "PNG", pnginfo=info, dpi=(300, 300))
    assert b"tEXt" in with_text
    assert _decoded_hash(with_text) == _decoded_hash(_encode(array, "PNG"))


def test_one_pixel_change_changes_the_hash() -> None:
    array = _random_rgb()
    changed = array.copy()
    changed[5, 7, 1] ^= 1
    assert content_hash(array) != content_hash(changed)
    assert _decoded_hash(_encode(array, "PNG")) != _decoded_hash(_encode(changed, "PNG"))


def test_shape_is_part_of_the_hash() -> None:
    data = np.arange(36, dtype=np.uint8)
    assert content_hash(data.reshape(2, 6, 3)) != content_hash(data.reshape(3, 4, 3))


def test_dtype_is_part_of_the_hash() -> None:
    data = np.zeros((2, 2, 3), dtype=np.uint8)
    assert content_hash(data) != content_hash(data.view(np.int8))


def test_layout_in_memory_does_not_matter() -> None:
    array = _random_rgb()
    fortran = np.asfortranarray(array)
    strided = np.ascontiguousarray(_random_rgb(48, 32)[::2])
    assert content_hash(fortran) == content_hash(array)
    assert content_hash(_random_rgb(48, 32)[::2]) == content_hash(strided)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(TypeError):
        content_hash(np.array([[object()]], dtype=object))


def test_large_image_hashes_quickly() -> None:
    import time

    pixels = np.zeros((4000, 4000, 3), dtype=np.uint8)
    started = time.perf_counter()
    content_hash(pixels)
    assert time.perf_counter() - started < 2.0
