"""Re-acquisition: deterministic per (seed, bytes, copy), only ever lowers resolution, and each step does
what it says; geometry fills with the option's background."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from hemascope.imaging.decode import decode_image
from hemascope.training.acquisition import DEFAULT_ACQUISITION, copy_rng, geometry, reacquire

OFF = replace(
    DEFAULT_ACQUISITION,
    hed_scale=0.0,
    hed_shift=0.0,
    brightness=0.0,
    contrast=0.0,
    gamma=(1.0, 1.0),
    saturation=0.0,
    width=(10_000.0, 10_000.0),
    blur_p=0.0,
    noise_p=0.0,
    jpeg_p=0.0,
    rotate=False,
    flip=False,
    zoom=(1.0, 1.0),
)


def test_copies_are_deterministic_and_differ_between_copies(real_images: list[Path]) -> None:
    data = real_images[0].read_bytes()
    pixels = decode_image(data).pixels
    a = reacquire(pixels, copy_rng(7, data, 0))
    b = reacquire(pixels, copy_rng(7, data, 0))
    c = reacquire(pixels, copy_rng(7, data, 1))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_all_steps_off_is_near_identity(real_images: list[Path]) -> None:
    pixels = decode_image(real_images[3].read_bytes()).pixels
    out = reacquire(pixels, np.random.default_rng(0), OFF)
    assert out.shape == pixels.shape
    assert np.abs(out.astype(int) - pixels.astype(int)).max() <= 2  # the HED round trip's rounding


def test_resolution_only_goes_down_within_the_range(real_images: list[Path]) -> None:
    pixels = decode_image(real_images[0].read_bytes()).pixels
    cfg = replace(OFF, width=(120.0, 200.0))
    widths = {reacquire(pixels, np.random.default_rng(i), cfg).shape[1] for i in range(20)}
    assert min(widths) >= 120 and max(widths) <= 200
    up = replace(OFF, width=(1000.0, 2000.0))
    assert reacquire(pixels, np.random.default_rng(0), up).shape == pixels.shape


def test_blur_lowers_detail_and_jpeg_changes_pixels(real_images: list[Path]) -> None:
    pixels = decode_image(real_images[0].read_bytes()).pixels
    blurred = reacquire(pixels, np.random.default_rng(0), replace(OFF, blur_p=1.0, blur_sigma=(2.0, 2.0)))
    assert (
        np.abs(np.diff(blurred.astype(float), axis=1)).mean()
        < np.abs(np.diff(pixels.astype(float), axis=1)).mean()
    )
    jpeg = reacquire(pixels, np.random.default_rng(0), replace(OFF, jpeg_p=1.0, jpeg_quality=(20, 21)))
    assert not np.array_equal(jpeg, reacquire(pixels, np.random.default_rng(0), OFF))


def test_geometry_fills_uncovered_corners_with_the_background() -> None:
    square = np.zeros((64, 64, 3), np.uint8)
    cfg = replace(OFF, rotate=True)
    turned = geometry(square, np.random.default_rng(3), (255, 255, 255), cfg)
    assert turned.shape == square.shape and (turned[0, 0] == 255).all()
