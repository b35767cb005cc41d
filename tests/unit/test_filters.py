"""The OpenCV filters are bit-identical to the SciPy / NumPy calls they replace, on random inputs of every
size (including images smaller than the Gaussian kernel) and on real cell images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from hemascope.data import shared_data_dir
from hemascope.imaging import filters
from hemascope.imaging.cellseg import stain_feature, working_image
from hemascope.imaging.decode import decode_image

SHAPES = [(1, 1), (1, 9), (5, 7), (13, 3), (40, 41), (128, 130), (224, 224)]


def _masks(seed: int, shape: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    speckle = rng.random(shape) > 0.5
    blobs = ndi.binary_opening(rng.random(shape) > 0.4) | (rng.random(shape) > 0.97)
    ring = np.zeros(shape, bool)
    h, w = shape
    ring[h // 4 : 3 * h // 4 + 1, w // 4 : 3 * w // 4 + 1] = True
    ring[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = False
    return [speckle, blobs, ring, np.ones(shape, bool), np.zeros(shape, bool)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [1.0, 3.36])
def test_gaussian_is_scipys(shape: tuple[int, int], sigma: float) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for raw in (rng.integers(-300, 300, shape), rng.random(shape) > 0.5):
        image = raw.astype(np.float32)
        expected = ndi.gaussian_filter(image, sigma)
        got = filters.gaussian(image, sigma)
        assert got.dtype == np.float32 and got.shape == image.shape
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_morphology_is_scipys(shape: tuple[int, int]) -> None:
    square = np.ones((3, 3), bool)
    for seed, mask in enumerate(_masks(shape[0] + shape[1], shape)):
        assert np.array_equal(filters.opening(mask), ndi.binary_opening(mask, structure=square)), seed
        assert np.array_equal(
            filters.closing(mask, 2), ndi.binary_closing(mask, structure=square, iterations=2)
        ), seed
        for grow in (1, 2, 3):
            expected = ndi.binary_dilation(mask, iterations=grow)  # the cross structure
            assert np.array_equal(filters.dilate(mask, grow, cross=True), expected), (seed, grow)
        assert np.array_equal(filters.erode(mask), ndi.binary_erosion(mask, structure=square)), seed
        assert np.array_equal(filters.fill_holes(mask), ndi.binary_fill_holes(mask)), seed


@pytest.mark.parametrize("shape", SHAPES)
def test_minimum_and_maximum_of_3_are_scipys(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3 * shape[0] + shape[1])
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 3, shape, dtype=np.uint8)):
        assert np.array_equal(filters.maximum3(image), ndi.maximum_filter(image, size=3))
        assert np.array_equal(filters.minimum3(image), ndi.minimum_filter(image, size=3))


@pytest.mark.parametrize("shape", SHAPES)
def test_components_number_and_measure_like_scipy(shape: tuple[int, int]) -> None:
    for seed, mask in enumerate(_masks(7 * shape[0] + shape[1], shape)):
        labels, count = ndi.label(mask)
        parts = filters.components(mask)
        assert parts.count == count and np.array_equal(parts.labels, labels), seed
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        areas = np.asarray(ndi.sum_labels(mask, labels, index), np.float64)
        centres = np.asarray(ndi.center_of_mass(mask, labels, index), np.float64).reshape(-1, 2)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        assert np.array_equal(parts.areas, areas)
        assert np.array_equal(parts.centres, centres)
        assert np.array_equal(parts.touches_border, np.isin(index, border))


@pytest.mark.parametrize("size", [1, 2, 3, 100, 16384, 50176, 200000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_percentile_is_numpys(size: int, dtype: type) -> None:
    rng = np.random.default_rng(size)
    for raw in (rng.normal(size=size), np.round(rng.normal(size=size) * 3), rng.exponential(size=size)):
        values = raw.astype(dtype)
        for q in ([1, 99], [99], [0, 50, 100]):
            assert filters.percentile(values, q) == np.percentile(values, q).tolist(), (q, dtype)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 101, 1000, 16384])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_is_numpys(size: int, dtype: type) -> None:
    rng = np.random.default_rng(size + 1)
    for raw in (rng.normal(size=size) * 100, np.round(rng.normal(size=size) * 3), rng.exponential(size=size)):
        values = raw.astype(dtype)
        got, expected = filters.median(values), np.median(values)
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_medians_are_scipys(shape: tuple[int, int], dtype: type) -> None:
    rng = np.random.default_rng(5 * shape[0] + shape[1])
    values = np.round(rng.normal(size=shape) * 4).astype(dtype)  # ties, as real images have
    for mask in _masks(shape[0], shape):
        labels, count = ndi.label(mask)
        if count == 0:
            continue
        expected = ndi.median(values, labels, np.arange(1, count + 1))
        got = filters.label_medians(values, labels.astype(np.int32), count)
        assert np.array_equal(got, np.asarray(expected)) and got.dtype == np.asarray(expected).dtype


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        filters.median(np.zeros(0, np.float32))


def test_filters_match_scipy_on_real_images() -> None:
    """The segmentation's own inputs: the stain feature of real images of the three laboratories."""
    data = shared_data_dir()
    paths = [
        *sorted((data / "bloodcells-5class/val/monocyte").glob("*.jpg"))[:3],
        *sorted((data / "bloodcells-5class/val/myeloblast").glob("*.jpg"))[:3],
        *sorted((data / "jhu-cellavision/seg_neutrophil").glob("*.jpg"))[:3],
    ]
    if len(paths) < 9:
        pytest.skip(f"no data at {data}")
    for path in paths:
        small, _ = working_image(decode_image(path.read_bytes()).pixels)
        rgb = small.astype(np.float32)
        raw = 2 * rgb[..., 2] - rgb[..., 0] - rgb[..., 1]
        feature = stain_feature(small)
        assert np.array_equal(feature, ndi.gaussian_filter(raw, 1.0)), path.name
        assert filters.percentile(feature, [1, 99]) == np.percentile(feature, [1, 99]).tolist()
