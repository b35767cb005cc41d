"""The preprocessing options give, pixel for pixel, what their version strings were defined with.

``tests/reference_preprocess.py`` is that definition (the SciPy / per-pixel NumPy implementation of cell
segmentation revision 1 and haematoxylin channel revision 1). The package computes the same steps with
OpenCV and lookup tables; the version strings did not change, so the output must not either. Checked on real
images of the three laboratories (both scanners of bloodcells-5class, the Barcelona probe neutrophils, Johns
Hopkins) and on the odd images that take the fallbacks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hemascope.data import shared_data_dir
from hemascope.imaging.cellseg import crop_cell, segment_cell
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import PREPROCESSING, get_preprocessing
from tests import reference_preprocess as reference

DATA = shared_data_dir()
#: (folder, images taken): every cell class of every source.
SOURCES = {
    "bloodcells-5class": [f"bloodcells-5class/val/{c}" for c in ("basophil", "erythroblast", "monocyte")]
    + [f"bloodcells-5class/val/{c}" for c in ("myeloblast", "seg_neutrophil")],
    "probe-pbc-neutrophil": ["probe-pbc-neutrophil/seg_neutrophil"],
    "jhu-cellavision": [
        f"jhu-cellavision/{c}"
        for c in ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
    ],
}
PER_FOLDER = 4
#: Set to 1 to compare every image of the three sources (about 5400; some minutes on two cores).
ALL_IMAGES = os.environ.get("HEMASCOPE_EQUALITY_ALL_IMAGES") == "1"
#: The options whose steps were reimplemented (the crop, the segmentation, the channels); the stain
#: normalisers are torchstain's and unchanged.
OPTIONS = [
    name for name in PREPROCESSING if name != "plain" and "macenko" not in name and "reinhard" not in name
]


def _images(source: str) -> list[Path]:
    paths: list[Path] = []
    for folder in SOURCES[source]:
        found = sorted((DATA / folder).glob("*.jpg"))
        step = max(1, len(found) // PER_FOLDER)
        paths += found[::step][:PER_FOLDER]
    return paths


@pytest.mark.parametrize("source", list(SOURCES))
def test_default_option_is_pixel_identical_on_real_images(source: str) -> None:
    paths = _images(source)
    if not paths:
        pytest.skip(f"no data at {DATA}")
    option = get_preprocessing("cellcrop-hematoxylin")
    for path in paths:
        pixels = decode_image(path.read_bytes()).pixels
        expected = reference.prepare(option, pixels)
        got = option.prepare_report(pixels)
        assert got.pixels.dtype == np.uint8 and got.pixels.flags.c_contiguous
        assert np.array_equal(got.pixels, expected), path.name
        # The masks the input check and the explanations use are the same too.
        seg, ref_seg = segment_cell(pixels), reference.segment_cell(pixels)
        assert (seg.fallback, seg.reason, seg.scale) == (ref_seg.fallback, ref_seg.reason, ref_seg.scale)
        assert np.array_equal(seg.cell, ref_seg.cell) and np.array_equal(seg.nucleus, ref_seg.nucleus)
        assert got.box == reference.crop_cell(pixels, option.size).box


@pytest.mark.skipif(not ALL_IMAGES, reason="HEMASCOPE_EQUALITY_ALL_IMAGES=1 compares every image")
@pytest.mark.parametrize("source", list(SOURCES))
def test_default_option_is_pixel_identical_on_every_image(source: str) -> None:
    paths = sorted((DATA / source).rglob("*.jpg"))
    if not paths:
        pytest.skip(f"no data at {DATA / source}")
    option = get_preprocessing("cellcrop-hematoxylin")
    different = []
    for path in paths:
        pixels = decode_image(path.read_bytes()).pixels
        if not np.array_equal(option.prepare(pixels), reference.prepare(option, pixels)):
            different.append(path.name)
    assert not different, different


@pytest.mark.parametrize("name", OPTIONS)
def test_every_reimplemented_option_is_pixel_identical(name: str) -> None:
    paths = [path for source in SOURCES for path in _images(source)[::3]]
    if not paths:
        pytest.skip(f"no data at {DATA}")
    option = get_preprocessing(name)
    for path in paths:
        pixels = decode_image(path.read_bytes()).pixels
        assert np.array_equal(option.prepare(pixels), reference.prepare(option, pixels)), path.name


def _odd_images() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    flat = np.full((300, 320, 3), 200, np.uint8)
    noise = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    tiny = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    purple = np.full((200, 260, 3), (245, 222, 200), np.uint8)
    purple[60:140, 90:170] = (90, 40, 140)  # a nucleus touching nothing, no cytoplasm
    edge = purple.copy()
    edge[:, :40] = (90, 40, 140)  # a second, larger blob on the border
    return [flat, noise, tiny, purple, edge]


@pytest.mark.parametrize("name", OPTIONS)
def test_odd_images_take_the_same_fallbacks_and_pixels(name: str) -> None:
    option = get_preprocessing(name)
    for index, pixels in enumerate(_odd_images()):
        got = option.prepare(pixels)
        assert np.array_equal(got, reference.prepare(option, pixels)), index
        if option.cell_crop:
            crop, ref_crop = crop_cell(pixels, 64), reference.crop_cell(pixels, 64)
            assert (crop.fallback, crop.reason) == (ref_crop.fallback, ref_crop.reason), index
            assert np.array_equal(crop.alpha, ref_crop.alpha), index


@pytest.mark.parametrize("shape", [(1, 40, 3), (2, 2, 3), (1, 1, 3)])
def test_a_frame_one_pixel_thin_gets_the_fallback_crop(shape: tuple[int, int, int]) -> None:
    """Such frames had an empty fallback disk (no box to crop); now its centre pixel is the cell."""
    pixels = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    prepared = get_preprocessing("cellcrop-hematoxylin").prepare_report(pixels)
    assert prepared.pixels.shape == (224, 224, 3) and prepared.fallbacks
