"""White-cell segmentation by colour, and the square crop around the cell with a neutralised background.

Both scanners' images show one white cell near the centre among red cells. The stain feature
``2B - R - G`` ("blueness", smoothed) puts the nucleus (dark purple) highest, the cytoplasm (pale lilac or
blue) in the middle and red cells (pink) and the background (beige or grey) lowest. Segmentation, at a
working resolution of about :data:`WORK_SIDE` pixels:

1. a three-class Otsu split of the feature: the top class are nucleus candidates; they are closed (so the
   lobes of a segmented neutrophil join) and the largest *central* component is the nucleus (area weighted
   down with the distance from the image centre and for touching the border, so a smudge cell at the edge
   loses to the cell in the middle);
2. the middle and top classes (opened, holes filled) are cell candidates; from the nucleus centroid, rays
   in :data:`RAYS` directions find where the cell ends; the radius profile is clipped against its median
   and the nucleus size (red cells touching the cytoplasm would otherwise leak in) and median-filtered, and
   the polygon it draws, with the nucleus, is the cell mask.

When no plausible cell is found (a flat or noise image, no dark purple blob, a blob too small or too big)
the result is a deterministic fallback, a centred disk, with ``fallback=True`` and the reason, and
:func:`crop_cell` still returns a crop. ``SEG_REVISION`` names this algorithm inside preprocessing versions:
change it whenever the output changes.

The filters, morphology and labelling run in OpenCV through :mod:`hemascope.imaging.filters`, which
reproduces the SciPy definitions this revision was written with bit for bit (the resampling and the polygon
stay in Pillow), so the output is that of revision 1 at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from hemascope.imaging import filters
from hemascope.imaging.thresholds import otsu3

SEG_REVISION = 1
WORK_SIDE = 128
RAYS = 64
#: The cell's larger extent is this fraction of the crop's side.
CELL_FILL = 0.8
#: The constant colour that replaces everything outside the cell (a light achromatic grey).
NEUTRAL = (236, 236, 236)
#: Fallback crop: a centred square of this fraction of the shorter image side.
FALLBACK_SIDE = 0.75

_MIN_NUCLEUS_FRACTION = 0.002
_MAX_NUCLEUS_FRACTION = 0.6
_MIN_FEATURE_CONTRAST = 30.0
_MIN_DARKNESS = 20.0
_ANGLES = np.linspace(0.0, 2 * np.pi, RAYS, endpoint=False)
_SIN, _COS = np.sin(_ANGLES), np.cos(_ANGLES)
#: The polygon's unit vectors, each from its own scalar ``cos`` / ``sin`` (as revision 1 computed them).
_POLY_COS = np.array([float(np.cos(a)) for a in _ANGLES])
_POLY_SIN = np.array([float(np.sin(a)) for a in _ANGLES])
#: Each ray's window of 7 neighbours around the ring.
_RING_WINDOWS = (np.arange(RAYS)[:, None] + np.arange(-3, 4)[None, :]) % RAYS


@dataclass(frozen=True)
class CellSegmentation:
    """Masks at working resolution (``scale`` full-resolution pixels per working pixel)."""

    cell: NDArray[np.bool_]
    nucleus: NDArray[np.bool_]
    scale: float
    fallback: bool
    reason: str = ""

    def box(self, fill: float = CELL_FILL) -> tuple[float, float, float, float]:
        """The square crop ``(x0, y0, x1, y1)`` in full-resolution pixels: the cell's larger bbox extent is
        ``fill`` of its side, centred on the bbox."""
        ys, xs = np.nonzero(self.cell)
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        extent = float(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        half = extent / fill / 2
        s = self.scale
        return ((cx - half) * s, (cy - half) * s, (cx + half) * s, (cy + half) * s)


@dataclass(frozen=True)
class CellCrop:
    """``pixels``: the square crop (``size x size x 3`` uint8, real background kept); ``alpha``: the
    feathered cell mask in [0, 1] on the same grid."""

    pixels: NDArray[np.uint8]
    alpha: NDArray[np.float32]
    fallback: bool
    reason: str = ""
    #: the square crop ``(x0, y0, x1, y1)`` on the original image (may extend past its edges)
    box: tuple[float, float, float, float] | None = None


def stain_feature(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``2B - R - G``, Gaussian-smoothed (sigma 1 px): high on the purple nucleus, low on pink and beige."""
    rgb = pixels.astype(np.float32)
    feature = 2 * rgb[..., 2] - rgb[..., 0] - rgb[..., 1]
    return filters.gaussian(feature, 1.0)


#: :func:`working_image`'s result: the working-resolution pixels and the scale.
Working = tuple[NDArray[np.uint8], float]


def working_image(pixels: NDArray[np.uint8]) -> Working:
    """``pixels`` resized so the shorter side is :data:`WORK_SIDE` (never enlarged), and the scale (full
    resolution pixels per working pixel). The input check and the segmentation both start from it: a
    caller running both on one image may compute it once and pass it to each (``working=``)."""
    h, w = pixels.shape[:2]
    scale = min(h, w) / WORK_SIDE
    if scale <= 1:
        return pixels, 1.0
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    return small, (w / size[0] + h / size[1]) / 2


def _disk(shape: tuple[int, int], radius: float) -> NDArray[np.bool_]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)


def _fallback(shape: tuple[int, int], scale: float, reason: str) -> CellSegmentation:
    disk = _disk(shape, FALLBACK_SIDE * CELL_FILL * min(shape) / 2)
    if not disk.any():  # a frame one or two pixels thin: its centre pixel, so the crop has a box
        disk[(shape[0] - 1) // 2, (shape[1] - 1) // 2] = True
    return CellSegmentation(cell=disk, nucleus=disk, scale=scale, fallback=True, reason=reason)


def _pick_nucleus(candidates: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    """The largest central component of the (closed) nucleus candidates, or ``None``."""
    closed = filters.closing(candidates, iterations=2) | candidates
    parts = filters.components(closed)
    if parts.count == 0:
        return None
    h, w = candidates.shape
    centres = parts.centres
    distance = np.hypot(centres[:, 0] - (h - 1) / 2, centres[:, 1] - (w - 1) / 2)
    touches = parts.touches_border
    score = parts.areas * np.exp(-((distance / (0.3 * min(h, w))) ** 2)) * np.where(touches, 0.25, 1.0)
    return np.asarray(parts.labels == int(np.argmax(score)) + 1)


@lru_cache(maxsize=32)
def _rays(longest: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The radii (every half pixel up to ``longest``) and each ray's offsets ``sin * r``, ``cos * r``
    (read-only: shared by every call)."""
    radii = np.arange(0.0, float(longest), 0.5)
    rays = (radii, _SIN[:, None] * radii[None, :], _COS[:, None] * radii[None, :])
    for array in rays:
        array.setflags(write=False)
    return rays


def _sample(planes: NDArray[np.uint8], ys: NDArray[np.float64], xs: NDArray[np.float64]) -> NDArray[np.uint8]:
    """``scipy.ndimage.map_coordinates(planes, (ys, xs), order=0, cval=0)``: the nearest pixel
    (``floor(c + 0.5)``), 0 outside ``[0, size - 1]``."""
    h, w = planes.shape
    inside = (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
    iy = np.clip(np.floor(ys + 0.5), 0, h - 1).astype(np.intp)  # outside points: any pixel, masked below
    ix = np.clip(np.floor(xs + 0.5), 0, w - 1).astype(np.intp)
    return np.asarray(planes[iy, ix] * inside)


def radial_cell(cell: NDArray[np.bool_], nucleus: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """A star-shaped cell mask around the nucleus: where each ray from its centroid leaves ``cell``."""
    h, w = cell.shape
    ys_n, xs_n = np.nonzero(nucleus)
    count = ys_n.size
    cy, cx = float(ys_n.sum()) / count, float(xs_n.sum()) / count
    r_eq = float(np.sqrt(nucleus.sum() / np.pi))
    radii, dy, dx = _rays(max(h, w))
    ys, xs = cy + dy, cx + dx
    # Both masks in one plane (bit 0: cell, bit 1: nucleus), sampled once.
    planes = cell.astype(np.uint8) | (nucleus.astype(np.uint8) * np.uint8(2))
    sampled = _sample(planes, ys, xs)
    in_cell, in_nucleus = (sampled & 1).astype(bool), sampled >= 2
    n_steps = radii.size
    last_nucleus = np.where(in_nucleus.any(1), n_steps - 1 - np.argmax(in_nucleus[:, ::-1], axis=1), 0)
    beyond = (np.arange(n_steps)[None, :] >= last_nucleus[:, None]) & ~in_cell
    first_out = np.where(beyond.any(1), np.argmax(beyond, axis=1), n_steps - 1)
    r_nucleus, r_cell = radii[last_nucleus], radii[first_out]
    r_cell = np.minimum(r_cell, np.minimum(1.2 * np.median(r_cell), r_nucleus + 1.2 * r_eq))
    r_cell = np.maximum(r_cell, r_nucleus + 1.0)
    # A median filter of 7 around the ring (scipy.ndimage.median_filter(size=7, mode="wrap")).
    r_cell = np.sort(r_cell[_RING_WINDOWS], axis=1)[:, 3]
    px, py = cx + r_cell * _POLY_COS, cy + r_cell * _POLY_SIN
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(px.tolist(), py.tolist(), strict=True)), fill=255)
    return np.asarray(canvas) > 127


def segment_cell(pixels: NDArray[np.uint8], working: Working | None = None) -> CellSegmentation:
    """Segments the white cell of a decoded ``H x W x 3`` uint8 RGB image; never raises on odd content.
    ``working``: :func:`working_image` of these pixels, when the caller has it already."""
    small, scale = working if working is not None else working_image(pixels)
    shape = (small.shape[0], small.shape[1])
    feature = stain_feature(small)
    lo_p, hi_p = filters.percentile(feature, [1, 99])
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
    contrast = float(filters.median(feature[nucleus]) - filters.median(feature[background]))
    # The mean of R, G, B in float32: ``(R + G) + B`` divided by 3, as ``mean(axis=2)`` sums three values.
    red, green, blue = (plane.astype(np.float32) for plane in cv2.split(small))
    luminance = ((red + green) + blue) / np.float32(3)
    darkness = float(filters.median(luminance[background]) - filters.median(luminance[nucleus]))
    if contrast < _MIN_FEATURE_CONTRAST or darkness < _MIN_DARKNESS:
        return _fallback(shape, scale, "low-contrast")
    candidates = filters.fill_holes(filters.opening(feature > low) | nucleus)
    cell = filters.fill_holes(radial_cell(candidates, nucleus) | nucleus)
    return CellSegmentation(cell=cell, nucleus=nucleus, scale=scale, fallback=False)


def _feather(mask: NDArray[np.bool_], size: int) -> NDArray[np.float32]:
    grow = max(1, round(0.01 * size))
    grown = filters.dilate(mask, grow, cross=True)
    alpha = filters.gaussian(grown.astype(np.float32), max(1.0, 0.015 * size))
    return np.asarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)


def crop_cell(
    pixels: NDArray[np.uint8], size: int, fill: float = CELL_FILL, working: Working | None = None
) -> CellCrop:
    """The ``size x size`` square around the segmented cell (the cell spans ``fill`` of it; out-of-image
    parts are :data:`NEUTRAL`) and the feathered cell mask on the same grid (``working``: as for
    :func:`segment_cell`)."""
    seg = segment_cell(pixels, working)
    x0, y0, x1, y1 = seg.box(fill)
    h, w = pixels.shape[:2]
    pad = int(np.ceil(max(0.0, -x0, -y0, x1 - w, y1 - h))) + 1
    padded = (
        cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=NEUTRAL) if pad else pixels
    )
    box = (x0 + pad, y0 + pad, x1 + pad, y1 + pad)
    crop = Image.fromarray(padded).resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    s = seg.scale
    mpad = int(np.ceil(pad / s)) + 1
    mask_image = Image.fromarray(
        cv2.copyMakeBorder(seg.cell.astype(np.uint8) * 255, *(mpad,) * 4, cv2.BORDER_CONSTANT)
    )
    mask_box = (x0 / s + mpad, y0 / s + mpad, x1 / s + mpad, y1 / s + mpad)
    mask = np.asarray(mask_image.resize((size, size), Image.Resampling.BILINEAR, box=mask_box)) > 127
    return CellCrop(np.asarray(crop), _feather(mask, size), seg.fallback, seg.reason, (x0, y0, x1, y1))


def neutralise(
    pixels: NDArray[np.uint8], alpha: NDArray[np.float32], colour: tuple[int, int, int] | int = NEUTRAL
) -> NDArray[np.uint8]:
    """Blends ``pixels`` into ``colour`` outside the cell: ``alpha * pixels + (1 - alpha) * colour``.

    ``pixels`` is ``H x W x 3`` with a colour per channel, or a single ``H x W`` channel with one grey
    level (the same arithmetic per channel, so a replicated channel may be blended once)."""
    if pixels.ndim == 2:
        if not isinstance(colour, int):
            raise ValueError("a single channel is blended into one grey level (an int)")
        out = alpha * pixels.astype(np.float32) + (1 - alpha) * np.float32(colour)
    else:
        neutral = np.asarray(colour, np.float32)
        out = alpha[..., None] * pixels.astype(np.float32) + (1 - alpha[..., None]) * neutral
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
