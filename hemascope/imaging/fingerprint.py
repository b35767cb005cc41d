"""The acquisition fingerprint: how an image was taken, as a short vector of numbers.

Laboratories differ less in their cells than in how they image them: the camera's resolution and white
balance, the stain batch, focus, sensor noise and JPEG settings. The fingerprint measures those, not the
cell: the pixel size of the image; the colour (CIELAB) of the background, of the stained nucleus and of
the red cells; the spread of the background's lightness; focus (Laplacian energy, gradient, and their
ratio); sensor noise in the background (mean step from a 3x3 median); JPEG blockiness (differences
across the 8-pixel grid against those inside it); and the luminance range. A bundle keeps the
fingerprints of its training images per class (:mod:`hemascope.bundle.site`), so an answer can say
whether its class was ever validated on images that looked like this one.

Colour statistics come from a working image of about :data:`WORK_SIDE` pixels; focus, noise and
blockiness from the full-resolution luminance, since they depend on the pixel scale. Everything is
deterministic and depends on the decoded pixels only. :data:`REVISION` names the feature set: change it
whenever any value changes, and bundles fitted on another revision are refused.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

REVISION = 1
WORK_SIDE = 128

#: One name per fingerprint entry, in order.
NAMES: tuple[str, ...] = (
    "log_width",
    "log_height",
    "background_l",
    "background_a",
    "background_b",
    "nucleus_l",
    "nucleus_a",
    "nucleus_b",
    "red_cell_l",
    "red_cell_a",
    "red_cell_b",
    "background_l_spread",
    "log_laplacian_energy",
    "log_gradient",
    "focus_ratio",
    "log_noise",
    "jpeg_blockiness",
    "luminance_p1",
    "luminance_p99",
)
SIZE = len(NAMES)
#: The smallest difference that means something, per entry (CIELAB and luminance levels are whole numbers;
#: a 2 % change of pixel size): the floor of each entry's spread when a reference is standardised.
RESOLUTION: tuple[float, ...] = (0.02, 0.02) + (1.0,) * 9 + (0.1, 0.05, 0.05, 0.05, 0.05, 0.02, 1.0, 1.0)

_BACKGROUND_QUANTILE = 0.8  # the brightest fifth of the working image
_NUCLEUS_QUANTILE = 0.97  # the bluest 3 %
_RED_BLUENESS_QUANTILE = 0.3  # the least blue 30 % ...
_RED_LUMINANCE_QUANTILE = 0.6  # ... that are not background-bright
_EPS = 1e-3


def _working(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = pixels.shape[:2]
    scale = WORK_SIDE / max(h, w)
    if scale >= 1.0:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return np.asarray(out, dtype=np.uint8)


def _median_lab(lab: NDArray[np.float32], mask: NDArray[np.bool_]) -> list[float]:
    if not mask.any():
        mask = np.ones_like(mask)
    return [float(v) for v in np.median(lab[mask], axis=0)]


def _blockiness(lum: NDArray[np.uint8]) -> float:
    """Mean absolute step across the 8-pixel JPEG grid (both directions) over the mean step inside it."""
    across, inside = 0.0, 0.0
    for plane in (lum, np.ascontiguousarray(lum.T)):
        steps = cv2.absdiff(plane[:, 1:], plane[:, :-1])
        per_column = cv2.reduce(steps, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
        on_grid = (np.arange(per_column.size) % 8) == 7
        if on_grid.any() and (~on_grid).any():
            across += float(per_column[on_grid].mean())
            inside += float(per_column[~on_grid].mean())
    return across / (inside + _EPS)


def _quantiles(lum: NDArray[np.uint8], qs: tuple[float, ...]) -> list[float]:
    """Quantiles of a uint8 plane (the lowest level whose cumulative share reaches each ``q``)."""
    cumulative = np.cumsum(np.bincount(lum.ravel(), minlength=256)) / lum.size
    return [float(np.searchsorted(cumulative, q)) for q in qs]


def fingerprint(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The acquisition fingerprint (:data:`SIZE` values, in :data:`NAMES` order) of an RGB uint8 image."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got shape {pixels.shape} and {pixels.dtype}")
    h, w = pixels.shape[:2]
    small = np.ascontiguousarray(_working(pixels))
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    rgb = small.reshape(-1, 3).astype(np.float32)
    lum_small = rgb.mean(axis=1)
    blueness = 2 * rgb[:, 2] - rgb[:, 0] - rgb[:, 1]
    bright, dim = np.quantile(lum_small, [_BACKGROUND_QUANTILE, _RED_LUMINANCE_QUANTILE])
    nucleus_cut, red_cut = np.quantile(blueness, [_NUCLEUS_QUANTILE, _RED_BLUENESS_QUANTILE])
    background = lum_small >= bright
    nucleus = blueness >= nucleus_cut
    red = (blueness <= red_cut) & (lum_small < dim)

    lum = np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    laplacian = cv2.Laplacian(lum, cv2.CV_32F, ksize=1)
    gradient = cv2.magnitude(
        cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    )
    _, lap_std = cv2.meanStdDev(laplacian)
    log_lap = float(np.log(float(lap_std[0, 0]) ** 2 + _EPS))
    log_grad = float(np.log(cv2.mean(gradient)[0] + _EPS))
    p1, bright_full, p99 = _quantiles(lum, (0.01, _BACKGROUND_QUANTILE, 0.99))
    residual = cv2.absdiff(lum, cv2.medianBlur(lum, 3))
    full_background = lum >= bright_full
    noise = float(residual[full_background].mean()) if full_background.any() else 0.0

    values = [
        float(np.log(w)),
        float(np.log(h)),
        *_median_lab(lab, background),
        *_median_lab(lab, nucleus),
        *_median_lab(lab, red),
        float(lab[background, 0].std()) if background.any() else 0.0,
        log_lap,
        log_grad,
        log_lap - 2 * log_grad,
        float(np.log(noise + _EPS)),
        _blockiness(lum),
        float(p1),
        float(p99),
    ]
    return np.asarray(values, dtype=np.float32)
