"""The SciPy / per-pixel NumPy definition of the source-invariant preprocessing options (cell segmentation
revision 1, haematoxylin channel revision 1), kept only to check that the package's OpenCV implementation
gives the same output for the same version string (``tests/unit/test_preprocess_equality.py``) and to time
the two against each other (``bench/feature_model.py``). It is never used to serve or train.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from hemascope.imaging.cellseg import (
    _MAX_NUCLEUS_FRACTION,
    _MIN_DARKNESS,
    _MIN_FEATURE_CONTRAST,
    _MIN_NUCLEUS_FRACTION,
    CELL_FILL,
    NEUTRAL,
    RAYS,
    CellCrop,
    CellSegmentation,
    _fallback,
    working_image,
)
from hemascope.imaging.channels import _HED_FROM_RGB, H_MIN_SCALE, H_PERCENTILE, grayscale
from hemascope.imaging.preprocess import Preprocessing
from hemascope.imaging.stain import normalise_stain
from hemascope.imaging.thresholds import otsu3


def stain_feature(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    rgb = pixels.astype(np.float32)
    feature = 2 * rgb[..., 2] - rgb[..., 0] - rgb[..., 1]
    return np.asarray(ndi.gaussian_filter(feature, 1.0), dtype=np.float32)


def _pick_nucleus(candidates: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    closed = ndi.binary_closing(candidates, structure=np.ones((3, 3), bool), iterations=2) | candidates
    labels, count = ndi.label(closed)
    if count == 0:
        return None
    h, w = candidates.shape
    index = np.arange(1, count + 1)
    areas = np.asarray(ndi.sum_labels(closed, labels, index), dtype=np.float64)
    centres = np.asarray(ndi.center_of_mass(closed, labels, index), dtype=np.float64).reshape(-1, 2)
    distance = np.hypot(centres[:, 0] - (h - 1) / 2, centres[:, 1] - (w - 1) / 2)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    touches = np.isin(index, border)
    score = areas * np.exp(-((distance / (0.3 * min(h, w))) ** 2)) * np.where(touches, 0.25, 1.0)
    return np.asarray(labels == index[int(np.argmax(score))])


def radial_cell(cell: NDArray[np.bool_], nucleus: NDArray[np.bool_]) -> NDArray[np.bool_]:
    h, w = cell.shape
    cy, cx = (float(v) for v in ndi.center_of_mass(nucleus))
    r_eq = float(np.sqrt(nucleus.sum() / np.pi))
    radii = np.arange(0.0, float(max(h, w)), 0.5)
    angles = np.linspace(0.0, 2 * np.pi, RAYS, endpoint=False)
    ys = cy + np.sin(angles)[:, None] * radii[None, :]
    xs = cx + np.cos(angles)[:, None] * radii[None, :]
    coords = np.stack([ys, xs])
    in_cell = ndi.map_coordinates(cell.astype(np.uint8), coords, order=0, cval=0).astype(bool)
    in_nucleus = ndi.map_coordinates(nucleus.astype(np.uint8), coords, order=0, cval=0).astype(bool)
    n_steps = radii.size
    last_nucleus = np.where(in_nucleus.any(1), n_steps - 1 - np.argmax(in_nucleus[:, ::-1], axis=1), 0)
    beyond = (np.arange(n_steps)[None, :] >= last_nucleus[:, None]) & ~in_cell
    first_out = np.where(beyond.any(1), np.argmax(beyond, axis=1), n_steps - 1)
    r_nucleus, r_cell = radii[last_nucleus], radii[first_out]
    r_cell = np.minimum(r_cell, np.minimum(1.2 * np.median(r_cell), r_nucleus + 1.2 * r_eq))
    r_cell = np.maximum(r_cell, r_nucleus + 1.0)
    r_cell = ndi.median_filter(r_cell, size=7, mode="wrap")
    points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(r_cell, angles, strict=True)]
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 127


def segment_cell(pixels: NDArray[np.uint8]) -> CellSegmentation:
    small, scale = working_image(pixels)
    shape = (small.shape[0], small.shape[1])
    feature = stain_feature(small)
    lo_p, hi_p = np.percentile(feature, [1, 99])
    if hi_p - lo_p < 2 * _MIN_FEATURE_CONTRAST:
        return _fallback(shape, scale, "flat")
    low, high = otsu3(feature)
    nucleus = _pick_nucleus(feature > high)
    if nucleus is None:
        return _fallback(shape, scale, "no-nucleus")
    fraction = float(nucleus.mean())
    if not _MIN_NUCLEUS_FRACTION <= fraction <= _MAX_NUCLEUS_FRACTION:
        return _fallback(shape, scale, "nucleus-size")
    background = feature <= low
    if not background.any():
        return _fallback(shape, scale, "no-background")
    luminance = small.astype(np.float32).mean(axis=2)
    contrast = float(np.median(feature[nucleus]) - np.median(feature[background]))
    darkness = float(np.median(luminance[background]) - np.median(luminance[nucleus]))
    if contrast < _MIN_FEATURE_CONTRAST or darkness < _MIN_DARKNESS:
        return _fallback(shape, scale, "low-contrast")
    candidates = ndi.binary_opening(feature > low, structure=np.ones((3, 3), bool))
    candidates = ndi.binary_fill_holes(candidates | nucleus)
    cell = ndi.binary_fill_holes(radial_cell(np.asarray(candidates), nucleus) | nucleus)
    return CellSegmentation(cell=np.asarray(cell), nucleus=nucleus, scale=scale, fallback=False)


def _feather(mask: NDArray[np.bool_], size: int) -> NDArray[np.float32]:
    grow = max(1, round(0.01 * size))
    grown = ndi.binary_dilation(mask, iterations=grow)
    alpha = ndi.gaussian_filter(grown.astype(np.float32), sigma=max(1.0, 0.015 * size))
    return np.asarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)


def crop_cell(pixels: NDArray[np.uint8], size: int, fill: float = CELL_FILL) -> CellCrop:
    seg = segment_cell(pixels)
    x0, y0, x1, y1 = seg.box(fill)
    h, w = pixels.shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x1 - w, y1 - h))) + 1
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), constant_values=NEUTRAL[0]) if pad else pixels
    box = (x0 + pad, y0 + pad, x1 + pad, y1 + pad)
    crop = Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    s = seg.scale
    mpad = int(np.ceil(pad / s)) + 1
    mask_image = Image.fromarray(np.pad(seg.cell, mpad).astype(np.uint8) * 255)
    mask_box = (x0 / s + mpad, y0 / s + mpad, x1 / s + mpad, y1 / s + mpad)
    mask = np.asarray(mask_image.resize((size, size), Image.Resampling.BILINEAR, box=mask_box)) > 127
    return CellCrop(np.asarray(crop), _feather(mask, size), seg.fallback, seg.reason, (x0, y0, x1, y1))


def neutralise(
    pixels: NDArray[np.uint8], alpha: NDArray[np.float32], colour: tuple[int, int, int] = NEUTRAL
) -> NDArray[np.uint8]:
    neutral = np.asarray(colour, np.float32)
    out = alpha[..., None] * pixels.astype(np.float32) + (1 - alpha[..., None]) * neutral
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def haematoxylin(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    od = -np.log((pixels.astype(np.float64) + 1) / 256)
    density = np.asarray(np.maximum(od @ _HED_FROM_RGB[:, 0], 0.0))
    scale = max(float(np.percentile(density, H_PERCENTILE)), H_MIN_SCALE)
    grey = 255 * (1 - np.clip(density / scale, 0, 1))
    return np.ascontiguousarray(np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2))


def prepare(option: Preprocessing, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``option.prepare(pixels)`` as revision 1 defined it (the stain step is the package's own)."""
    alpha = None
    if option.cell_crop:
        crop = crop_cell(pixels, option.size)
        out, alpha = crop.pixels, crop.alpha
    else:
        out = option.resize(pixels)
    if option.stain:
        out = normalise_stain(out, option.stain).pixels
    if option.channels == "gray":
        out = grayscale(out)
    elif option.channels == "hematoxylin":
        out = haematoxylin(out)
    if alpha is not None:
        out = neutralise(out, alpha, (255, 255, 255) if option.channels == "hematoxylin" else NEUTRAL)
    return np.ascontiguousarray(out)
