"""The overlays and the panel around them (pure functions on arrays)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.explain.colormap import HEAT_THRESHOLD, jet
from services.explain.overlay import (
    focus_overlay,
    full_size_map,
    overlay,
    render,
    smooth_map,
)
from services.explain.panel import PanelText, colour_bar, render_panel

BACKGROUND = (242, 214, 192)  # a pale stained background pixel


def stained(width: int = 200, height: int = 180) -> np.ndarray:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = BACKGROUND
    return pixels


def hot_centre() -> np.ndarray:
    grid = np.zeros((7, 7), np.float32)
    grid[2:5, 2:5] = 1.0
    return grid


def test_the_stain_stays_untouched_where_the_heat_is_low() -> None:
    pixels = stained()
    drawn = render(pixels, hot_centre(), None)
    assert tuple(drawn[2, 2]) == BACKGROUND  # the old overlay made this (145, 128, 166)
    assert tuple(drawn[90, 100]) != BACKGROUND  # the hot centre is coloured
    study = render(pixels, hot_centre(), None, "jet40")
    assert tuple(study[2, 2]) != BACKGROUND  # the study's overlay tints everything: still available


def test_no_seam_where_the_crop_ends() -> None:
    uniform = np.ones((7, 7), np.float32)  # heat right up to the crop's edges
    box = (40, 30, 160, 150)
    hard = full_size_map(uniform, 200, 180, box)
    smooth = smooth_map(uniform, 200, 180, box)
    assert np.abs(np.diff(hard, axis=1)).max() == pytest.approx(1.0)  # the study's map: a step at the crop
    assert np.abs(np.diff(smooth, axis=1)).max() < 0.1
    assert np.abs(np.diff(smooth, axis=0)).max() < 0.1
    assert smooth[90, 100] > 0.9 and smooth[5, 5] == 0.0


def test_the_map_is_smoother_than_bilinear_upsampling() -> None:
    checker = (np.indices((7, 7)).sum(axis=0) % 2).astype(np.float32)
    smooth = smooth_map(checker, 224, 224)
    bilinear = full_size_map(checker, 224, 224)
    second = np.abs(np.diff(smooth, n=2, axis=1)).max()
    assert second < np.abs(np.diff(bilinear, n=2, axis=1)).max() / 2  # no creases at the grid's cells


def test_the_cell_is_outlined() -> None:
    pixels = stained()
    cell = np.zeros(pixels.shape[:2], bool)
    cell[50:130, 60:140] = True
    drawn = focus_overlay(pixels, np.zeros(pixels.shape[:2], np.float32), cell)
    assert tuple(drawn[50, 100]) == (255, 255, 255)  # on the border
    assert tuple(drawn[90, 100]) == BACKGROUND  # inside, no heat: untouched
    assert tuple(drawn[20, 20]) == BACKGROUND


def test_jet_runs_from_blue_to_red() -> None:
    low, high = jet(np.asarray([0.0, 1.0], np.float32))
    assert low[2] > 0.4 and low[0] == 0  # blue
    assert high[0] > 0.4 and high[2] == 0  # red


def test_the_panel_shows_original_and_overlay_side_by_side_with_a_colour_bar() -> None:
    original = stained()
    blended = overlay(original, full_size_map(hot_centre(), 200, 180))
    text = PanelText("MYO_0004.jpg", "logistic_regression", "gradcam", "myeloblast", 0.97)
    panel = np.asarray(render_panel(original, blended, text))
    assert text.title == "MYO_0004.jpg: logistic_regression (Grad-CAM) explains myeloblast, p = 0.97"
    tile = 320  # both tiles scaled to this height
    width = round(200 * tile / 180)
    assert panel.shape[1] > 2 * width
    left = panel[36 : 36 + tile, 12 : 12 + width]
    assert np.abs(left.astype(int) - np.asarray(BACKGROUND)).max() <= 2  # the image as imaged
    right = panel[36 : 36 + tile, 12 + width + 12 : 12 + 2 * width + 12]
    expected = np.asarray(Image.fromarray(blended).resize((width, tile), Image.Resampling.LANCZOS))
    assert np.abs(right.astype(int) - expected.astype(int)).max() <= 1
    bar = colour_bar(100)
    assert bar[0, 0, 0] > 100 and bar[0, 0, 2] == 0  # hot at the top
    assert tuple(bar[-1, 0]) == (200, 200, 200)  # below the threshold: no colour
    first_grey = int(np.argmax((bar[:, 0] == 200).all(axis=1)))
    assert np.linspace(1, 0, 100)[first_grey] < HEAT_THRESHOLD <= np.linspace(1, 0, 100)[first_grey - 1]
