"""Training-time augmentation: deterministic per (seed, image bytes, copy), shape-preserving, and the
bookkeeping of embedded copies (order, sources, the shared PNG folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from hemascope.imaging.decode import decode_image
from hemascope.training.augment import (
    AugmentConfig,
    augment,
    augmented_copies,
    embed_augmented,
    hed_to_rgb,
    rgb_to_hed,
)

IDENTITY = AugmentConfig(
    hed_scale=0.0,
    hed_shift=0.0,
    scale=(1.0, 1.0),
    rotate=False,
    flip=False,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
)


def _mean_colour(paths: Sequence[Path]) -> NDArray[np.float32]:
    """A real (if tiny) embedding: the mean RGB of each decoded image."""
    return np.stack([decode_image(p.read_bytes()).pixels.reshape(-1, 3).mean(axis=0) for p in paths]).astype(
        np.float32
    )


def test_copies_are_deterministic_distinct_and_keep_shape(real_images: list[Path]) -> None:
    source = real_images[0].read_bytes()
    first = augmented_copies(source, 3, seed=7)
    again = augmented_copies(source, 3, seed=7)
    other_seed = augmented_copies(source, 1, seed=8)
    original = decode_image(source).pixels
    for a, b in zip(first, again, strict=True):
        assert a.shape == original.shape and a.dtype == np.uint8
        assert np.array_equal(a, b)
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], other_seed[0])
    assert not np.array_equal(first[0], original)


def test_hed_round_trip_is_exact_and_identity_config_changes_nothing(real_images: list[Path]) -> None:
    pixels = decode_image(real_images[-1].read_bytes()).pixels
    assert np.array_equal(hed_to_rgb(rgb_to_hed(pixels)), pixels)
    out = augment(pixels, np.random.default_rng(0), IDENTITY)
    assert np.abs(out.astype(np.int64) - pixels).max() <= 1


def test_augment_refuses_non_rgb() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        augment(np.zeros((8, 8), np.uint8), np.random.default_rng(0))


def test_embed_augmented_orders_copies_by_source_and_reuses_kept_files(
    real_images: list[Path], tmp_path: Path
) -> None:
    paths = real_images[:3]
    vectors, sources = embed_augmented(paths, 2, _mean_colour, seed=1, keep=tmp_path / "kept")
    assert vectors.shape == (6, 3)
    assert sources.tolist() == [0, 0, 1, 1, 2, 2]
    expected = _mean_colour([tmp_path / "kept" / f"{i:06d}-{c:02d}.png" for i in range(3) for c in range(2)])
    assert np.allclose(vectors, expected)
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()}
    again, _ = embed_augmented(paths, 2, _mean_colour, seed=1, keep=tmp_path / "kept")
    assert np.array_equal(again, vectors)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()} == kept  # not rewritten
    temporary, _ = embed_augmented(paths, 2, _mean_colour, seed=1)
    assert np.allclose(temporary, vectors)  # the same copies without a kept folder
