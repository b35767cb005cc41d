"""Preprocessing: the resize step, the NumPy normalisation reference, and the version string."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hemascope.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, STUDY_PREPROCESSING, Preprocessing


def test_resize_to_224_uint8_rgb() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (363, 360, 3), dtype=np.uint8)
    out = STUDY_PREPROCESSING.resize(pixels)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8


def test_resize_keeps_flat_colour_and_is_identity_at_target_size() -> None:
    flat = np.full((400, 400, 3), (200, 100, 50), dtype=np.uint8)
    assert (STUDY_PREPROCESSING.resize(flat) == (200, 100, 50)).all()
    exact = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert STUDY_PREPROCESSING.resize(exact) is exact


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 4), (10, 10, 1)])
def test_resize_rejects_non_rgb(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        STUDY_PREPROCESSING.resize(np.zeros(shape, dtype=np.uint8))


def test_normalise_is_imagenet_mean_std_nchw() -> None:
    batch = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    batch[1] = 255
    out = STUDY_PREPROCESSING.normalise(batch)
    assert out.shape == (2, 3, 4, 4)
    assert out.dtype == np.float32
    expected_black = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)
    expected_white = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[0, :, 0, 0], expected_black, rtol=1e-6)
    np.testing.assert_allclose(out[1, :, 2, 3], expected_white, rtol=1e-6)


def test_every_recipe_change_changes_the_version() -> None:
    base = STUDY_PREPROCESSING
    variants = [
        dataclasses.replace(base, size=256),
        dataclasses.replace(base, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), norm_name="half"),
    ]
    versions = {base.version, *(v.version for v in variants)}
    assert len(versions) == 3
    assert base.version == Preprocessing().version
