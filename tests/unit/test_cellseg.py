"""White-cell segmentation: thresholds, a drawn cell, real images of both scanners, and the fallbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from hemascope.data import shared_data_dir
from hemascope.imaging.cellseg import CELL_FILL, crop_cell, neutralise, segment_cell, stain_feature
from hemascope.imaging.thresholds import otsu, otsu3

DATA = shared_data_dir()
BACKGROUND = (245, 222, 200)  # Barcelona beige
RED_CELL = (205, 160, 165)
CYTOPLASM = (200, 175, 215)
NUCLEUS = (90, 40, 140)


def test_otsu_splits_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 2, 500), rng.normal(50, 3, 300)])
    assert 16 < otsu(values) < 44


def test_otsu3_splits_three_modes() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 2, 600), rng.normal(40, 2, 300), rng.normal(100, 3, 100)])
    low, high = otsu3(values)
    assert 6 < low < 34 and 46 < high < 90


def _drawn_cell(centre: tuple[int, int], radius: int, size: int = 360) -> np.ndarray:
    """A beige field with red cells and one white cell (lilac cytoplasm, purple nucleus) at ``centre``."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for x, y in [(40, 40), (300, 60), (60, 300), (310, 310), (180, 330), (330, 180)]:
        draw.ellipse((x - 30, y - 30, x + 30, y + 30), fill=RED_CELL)
    cx, cy = centre
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=CYTOPLASM)
    r = radius * 6 // 10
    draw.ellipse((cx - r - 8, cy - r, cx + r - 8, cy + r), fill=NUCLEUS)
    pixels = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(2).integers(-6, 7, pixels.shape)
    return np.asarray(np.clip(pixels + noise, 0, 255), dtype=np.uint8)


def _full_mask(seg_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(seg_mask.astype(np.uint8) * 255).resize((shape[1], shape[0]))
    return np.asarray(image) > 127


def test_drawn_cell_is_found_off_centre() -> None:
    centre, radius = (200, 170), 70
    pixels = _drawn_cell(centre, radius)
    seg = segment_cell(pixels)
    assert not seg.fallback
    mask = _full_mask(seg.cell, pixels.shape[:2])
    yy, xx = np.mgrid[:360, :360]
    truth = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.85, iou
    x0, y0, x1, y1 = seg.box()
    assert abs((x0 + x1) / 2 - centre[0]) < 6 and abs((y0 + y1) / 2 - centre[1]) < 6
    assert abs((x1 - x0) * CELL_FILL - 2 * radius) < 12


def test_crop_scales_the_cell_not_the_image() -> None:
    small = crop_cell(_drawn_cell((180, 180), 45), 128)
    large = crop_cell(_drawn_cell((180, 180), 90), 128)
    assert not small.fallback and not large.fallback
    cell_fraction = [float((c.alpha > 0.5).mean()) for c in (small, large)]
    assert abs(cell_fraction[0] - cell_fraction[1]) < 0.05
    assert cell_fraction[0] == pytest.approx(np.pi / 4 * CELL_FILL**2, abs=0.1)


@pytest.mark.parametrize(
    "relative",
    [
        "bloodcells-5class/train/basophil",
        "bloodcells-5class/train/monocyte",
        "bloodcells-5class/train/erythroblast",
        "bloodcells-5class/train/myeloblast",
        "bloodcells-5class/train/seg_neutrophil",
        "probe-pbc-neutrophil/seg_neutrophil",
    ],
)
def test_real_images_of_both_scanners(relative: str) -> None:
    paths = sorted((DATA / relative).glob("*.jpg"))[:3]
    if not paths:
        pytest.skip(f"no data at {DATA / relative}")
    for path in paths:
        _check_real(path)


def _check_real(path: Path) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    seg = segment_cell(pixels)
    assert not seg.fallback, (path.name, seg.reason)
    mask = _full_mask(seg.cell, pixels.shape[:2])
    h, w = mask.shape
    # The cell is the one in the middle: the mask's centroid is near the image centre, ...
    cy, cx = ndi.center_of_mass(mask)
    assert abs(cy - h / 2) < 0.2 * h and abs(cx - w / 2) < 0.2 * w, (path.name, cy, cx)
    # ... it holds the darkest purple (nucleus) pixels of the central region, ...
    feature = stain_feature(pixels)
    centre = np.zeros_like(mask)
    centre[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    purple = centre & (feature > np.percentile(feature[centre], 97))
    assert (mask & purple).sum() > 0.9 * purple.sum(), path.name
    # ... and little of the bright background (beige or grey: low feature, high luminance).
    luminance = pixels.astype(np.float32).mean(axis=2)
    background = (luminance > np.percentile(luminance, 70)) & (feature < np.percentile(feature, 50))
    assert (mask & background).sum() < 0.1 * mask.sum(), path.name
    assert 0.02 < mask.mean() < 0.6, path.name
    # The crop is mostly cell.
    crop = crop_cell(pixels, 128)
    assert (crop.alpha > 0.5).mean() > 0.35


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.full((300, 320, 3), 200, np.uint8), "flat"),
        (np.random.default_rng(3).integers(0, 256, (300, 300, 3), dtype=np.uint8), None),
        (np.zeros((5, 7, 3), np.uint8), "flat"),
    ],
    ids=["blank", "noise", "tiny-black"],
)
def test_fallback_on_images_without_a_cell(pixels: np.ndarray, reason: str | None) -> None:
    seg = segment_cell(pixels)
    assert seg.fallback and seg.reason
    if reason:
        assert seg.reason == reason
    crop = crop_cell(pixels, 64)
    assert crop.fallback and crop.pixels.shape == (64, 64, 3) and crop.pixels.dtype == np.uint8
    # Deterministic: the same image gives the same crop.
    again = crop_cell(pixels, 64)
    assert np.array_equal(crop.pixels, again.pixels) and np.array_equal(crop.alpha, again.alpha)


def test_neutralise_keeps_the_cell_and_replaces_the_rest() -> None:
    pixels = np.full((20, 20, 3), (10, 200, 30), np.uint8)
    alpha = np.zeros((20, 20), np.float32)
    alpha[5:15, 5:15] = 1.0
    out = neutralise(pixels, alpha, (100, 100, 100))
    assert (out[10, 10] == (10, 200, 30)).all() and (out[0, 0] == (100, 100, 100)).all()
