"""Is this an image of one white blood cell centred in the frame? A check before any class is trusted.

The classifiers only know single-cell images: square crops with one white cell in the middle among red
cells, as cell analysers save them. Shown anything else (a whole smear, several white cells, only red
cells, a photograph, a drawing, an empty field) they still answer with a class, so every image is checked
first. :func:`check_input` measures the decoded pixels (at the segmentation's working resolution, see
:mod:`hemascope.imaging.cellseg`) and sorts the image into one :class:`InputKind`, with the measured values
and a reason in words:

- ``blank``: no structure at all (every channel within a few grey levels across the frame);
- ``not_a_cell_image``: colours no stained blood film has (green, yellow, vivid primaries, no colour at
  all), pixel-to-pixel variation like random noise or smoother than any camera gives (a gradient), or
  large areas of one exact colour (a drawing);
- ``multiple_cells``: the frame is not a square crop (a smear field), several white-cell nuclei lie apart
  from each other, or the one white cell is cut by the frame's edge with the frame's centre off its
  nucleus, off centre, or small in the frame;
- ``no_cell``: it looks like a blood film but holds nothing like a stained white-cell nucleus (only red
  cells, platelets or background);
- ``single_cell``: none of the above.

Known limits (measured, see docs/services.md): white cells that touch so that their nuclei merge are seen
as one cell, and a large cell cut by the frame's edge whose nucleus still covers the centre passes.

Nuclei are found as in the segmentation: the stain feature ``2B - R - G``, a three-class Otsu split, the top
class closed and labelled; a component counts as a nucleus only when it is large enough and clearly bluer
and darker than the background class. The thresholds (:class:`Thresholds`) were set on the three
laboratories' single-cell images against BCCD smears, crops of them and non-cell pictures; ``bench/
input_check.py`` measures the rates and ``docs/services.md`` records them. ``CHECK_REVISION`` names this
algorithm and its thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from hemascope.imaging import filters
from hemascope.imaging.cellseg import Working, radial_cell, stain_feature, working_image
from hemascope.imaging.thresholds import otsu3

CHECK_REVISION = 1
_BLACK = 16


class InputKind(StrEnum):
    SINGLE_CELL = "single_cell"
    MULTIPLE_CELLS = "multiple_cells"
    NO_CELL = "no_cell"
    NOT_A_CELL_IMAGE = "not_a_cell_image"
    BLANK = "blank"


@dataclass(frozen=True)
class Thresholds:
    """Where each outcome starts (see the module docstring and docs/services.md for the measurements)."""

    #: blank below this spread (largest channel's 1st-99th percentile range, grey levels)
    blank_spread: float = 12.0
    #: not a cell image above this fraction of pixels with colours no stained film has
    foreign_colour: float = 0.05
    #: not a cell image below this share of pixels with any stain colour at all
    min_colourful: float = 0.05
    #: not a cell image above this speckle (median absolute difference of neighbouring pixels)
    max_speckle: float = 12.0
    #: not a cell image below this speckle (a smooth gradient or rendering; a camera leaves noise)
    min_speckle: float = 0.5
    #: not a cell image above this share of perfectly flat pixels (a drawing; cameras leave noise)
    max_flat: float = 0.2
    #: a nucleus covers at least this fraction of the frame (smaller purple blobs are platelets)
    min_nucleus: float = 0.008
    #: a nucleus is at least this much bluer (stain feature) than the background class
    nucleus_contrast: float = 100.0
    #: ... and at least this much darker (mean of R, G, B)
    nucleus_darkness: float = 10.0
    #: another nucleus counts as another white cell when at least this share of the main one's area ...
    other_cell_area: float = 0.3
    #: ... and this many main-nucleus radii away from its centre (lobes of one nucleus are nearer)
    other_cell_distance: float = 3.0
    #: the cell's centre lies at most this fraction of the frame's width (height) from the centre
    max_centre_offset: float = 0.25
    #: a cell whose nucleus touches the frame's edge more than this (InputMeasurements.edge_contact) while
    #: the frame's centre is off the cell is cut by the edge
    max_edge_contact: float = 0.2
    #: the frame's longer side is at most this times the shorter
    max_aspect: float = 1.25
    #: the cell covers at least this fraction of the frame
    min_cell_fraction: float = 0.02


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class InputMeasurements:
    """What :func:`measure_input` found, at the working resolution (fractions are of the frame's area)."""

    width: int
    height: int
    #: the largest channel's 1st-99th percentile range, in grey levels
    spread: float
    #: share of pixels with a colour no stained blood film has (green, yellow, saturated primaries)
    foreign_colour: float
    #: share of pixels with a noticeable colour (chroma above a grey)
    colourful: float
    #: median absolute difference between neighbouring pixels (random noise is high)
    speckle: float
    #: share of the not-black pixels whose 3 x 3 neighbourhood is one exact colour (drawings are flat,
    #: micrographs noisy)
    flat: float
    #: nucleus-like components far enough apart to be separate white cells (0 when none)
    nuclei: int = 0
    #: area of all nucleus-like components
    stained_fraction: float = 0.0
    #: area of the main (largest central) nucleus
    nucleus_fraction: float = 0.0
    #: area of the main white cell (nucleus and cytoplasm)
    cell_fraction: float = 0.0
    #: the larger of the cell's centre offsets from the frame's centre, as fractions of width and height
    centre_offset: float = 0.0
    #: how much of the main nucleus lies on the frame's edge: its pixels there over the square root of
    #: its area (0 when it does not touch the edge; a nucleus cut in half by the edge is about 1)
    edge_contact: float = 0.0
    #: distance from the frame's centre to the main cell, as a fraction of the shorter side (0: the centre
    #: lies on the cell)
    centre_gap: float = 0.0

    @property
    def aspect(self) -> float:
        return max(self.width, self.height) / max(1, min(self.width, self.height))


@dataclass(frozen=True)
class InputCheck:
    """The verdict: what kind of image it is, why, and the values behind it."""

    kind: InputKind
    reason: str
    measurements: InputMeasurements
    revision: int = CHECK_REVISION

    @property
    def single_cell(self) -> bool:
        return self.kind is InputKind.SINGLE_CELL


@dataclass(frozen=True)
class _Nuclei:
    count: int
    stained: float
    main: NDArray[np.bool_] | None
    edge_contact: float = 0.0


def _colour_stats(rgb: NDArray[np.float32]) -> tuple[float, float]:
    """(foreign, colourful): shares of pixels with non-stain colours and with any colour at all.

    Romanowsky-type stains colour blood films in pinks, purples, lilacs and blues on a white, grey or beige
    background: green is never well above both red and blue, and blue is never far below green unless the
    pixel is light (a beige background).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    lum = rgb.mean(axis=2)
    greenish = g > np.maximum(r, b) + 12
    yellow = (np.minimum(r, g) - b > 40) & (lum < 200)
    stain_hue = (g <= np.minimum(r, b) + 10) & (b >= 0.5 * r)  # purples, violets, blues
    vivid = (chroma > 150) & ~stain_hue
    foreign = greenish | yellow | vivid
    return float(foreign.mean()), float((chroma > 18).mean())


def _flat(small: NDArray[np.uint8]) -> float:
    """Share of the not-black pixels whose 3 x 3 neighbourhood is one exact colour (black is left out: a
    scanner's black border is flat in a micrograph too)."""
    flat = np.ones(small.shape[:2], dtype=bool)
    for channel in range(3):
        values = np.ascontiguousarray(small[..., channel])
        flat &= filters.maximum3(values) == filters.minimum3(values)
    lit = small.max(axis=2) >= _BLACK
    return float(flat[lit].mean()) if lit.any() else 1.0


def _speckle(lum: NDArray[np.float32]) -> float:
    dx = np.abs(np.diff(lum, axis=1))
    dy = np.abs(np.diff(lum, axis=0))
    return float(np.median(np.concatenate([dx.ravel(), dy.ravel()])))


def _nuclei(
    small: NDArray[np.uint8], feature: NDArray[np.float32], t: Thresholds
) -> tuple[_Nuclei, NDArray[np.bool_]]:
    """The nucleus-like components, the main one (largest central) and the background mask."""
    low, high = otsu3(feature)
    background = feature <= low
    empty = _Nuclei(0, 0.0, None)
    if not background.any() or high <= low:
        return empty, background
    lum = small.astype(np.float32).mean(axis=2)
    bg_feature, bg_lum = float(np.median(feature[background])), float(np.median(lum[background]))
    candidates = feature > high
    closed = filters.closing(candidates, iterations=2) | candidates
    parts = filters.components(closed)
    labels, count = parts.labels, parts.count
    if count == 0:
        return empty, background
    index = np.arange(1, count + 1)
    h, w = feature.shape
    areas = parts.areas / (h * w)
    med_feature = np.asarray(filters.label_medians(feature, labels, count), dtype=np.float64)
    med_lum = np.asarray(filters.label_medians(lum, labels, count), dtype=np.float64)
    like = (
        (areas >= t.min_nucleus)
        & (med_feature - bg_feature >= t.nucleus_contrast)
        & (bg_lum - med_lum >= t.nucleus_darkness)
    )
    if not like.any():
        return empty, background
    centres = parts.centres
    distance = np.hypot(centres[:, 0] - (h - 1) / 2, centres[:, 1] - (w - 1) / 2)
    edge = parts.touches_border
    centrality = np.exp(-((distance / (0.3 * min(h, w))) ** 2)) * np.where(edge, 0.25, 1.0)
    main = int(np.argmax(np.where(like, areas * centrality, -1.0)))
    radius = float(np.sqrt(areas[main] * h * w / np.pi))
    apart = np.hypot(centres[:, 0] - centres[main, 0], centres[:, 1] - centres[main, 1])
    # Another white cell: a nucleus of its own, whole inside the frame (analysers' crops often show a
    # neighbour cut by the edge), far from the main one and not much smaller.
    others = (
        like & ~edge & (areas >= t.other_cell_area * areas[main]) & (apart > t.other_cell_distance * radius)
    )
    nucleus = np.asarray(labels == index[main])
    on_edge = int(nucleus[0].sum() + nucleus[-1].sum() + nucleus[1:-1, 0].sum() + nucleus[1:-1, -1].sum())
    contact = on_edge / float(np.sqrt(nucleus.sum()))
    nuclei = _Nuclei(1 + int(others.sum()), float(areas[like].sum()), nucleus, contact)
    return nuclei, background


def _cell(
    feature: NDArray[np.float32], background: NDArray[np.bool_], nucleus: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    candidates = filters.fill_holes(filters.opening(~background) | nucleus)
    return filters.fill_holes(radial_cell(candidates, nucleus) | nucleus)


def measure_input(
    pixels: NDArray[np.uint8], thresholds: Thresholds = THRESHOLDS, working: Working | None = None
) -> InputMeasurements:
    """Measures a decoded ``H x W x 3`` uint8 RGB image; never raises on odd content. ``working``: the
    pixels' :func:`~hemascope.imaging.cellseg.working_image`, when the caller has it already."""
    height, width = pixels.shape[:2]
    small, _ = working if working is not None else working_image(pixels)
    rgb = small.astype(np.float32)
    spread = _spread(rgb)
    foreign, colourful = _colour_stats(rgb)
    base = InputMeasurements(
        width, height, spread, foreign, colourful, _speckle(rgb.mean(axis=2)), _flat(small)
    )
    if spread < thresholds.blank_spread:
        return base
    feature = stain_feature(small)
    nuclei, background = _nuclei(small, feature, thresholds)
    if nuclei.main is None:
        return base
    cell = _cell(feature, background, nuclei.main)
    h, w = cell.shape
    ys, xs = np.nonzero(cell)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    offset = max(abs(cx - w / 2) / w, abs(cy - h / 2) / h)
    outside = ndi.distance_transform_edt(~nuclei.main)
    gap = float(outside[min(h - 1, h // 2), min(w - 1, w // 2)]) / min(h, w)
    return InputMeasurements(
        width,
        height,
        spread,
        foreign,
        colourful,
        base.speckle,
        base.flat,
        nuclei=nuclei.count,
        stained_fraction=nuclei.stained,
        nucleus_fraction=float(nuclei.main.mean()),
        cell_fraction=float(cell.mean()),
        centre_offset=float(offset),
        edge_contact=nuclei.edge_contact,
        centre_gap=gap,
    )


def _spread(rgb: NDArray[np.float32]) -> float:
    """The widest colour channel's 1st-to-99th percentile range on the working image, in grey levels."""
    flat = rgb.reshape(-1, 3)
    return float(np.max(np.percentile(flat, 99, axis=0) - np.percentile(flat, 1, axis=0)))


def blank_reason(
    pixels: NDArray[np.uint8], thresholds: Thresholds = THRESHOLDS, working: Working | None = None
) -> str | None:
    """The BLANK verdict's reason when :func:`check_input` would call the image blank, else None: the same
    first rule at a fraction of the check's cost, for callers that want only that refusal."""
    small, _ = working if working is not None else working_image(pixels)
    spread = _spread(small.astype(np.float32))
    if spread >= thresholds.blank_spread:
        return None
    measured = InputMeasurements(pixels.shape[1], pixels.shape[0], spread, 0.0, 0.0, 0.0, 0.0)
    return classify_measurements(measured, thresholds)[1]


def classify_measurements(m: InputMeasurements, t: Thresholds = THRESHOLDS) -> tuple[InputKind, str]:
    """The kind and the reason in words, from the measurements (first rule that applies wins)."""
    if m.spread < t.blank_spread:
        return InputKind.BLANK, (
            f"the image is blank: every colour channel varies by under {t.blank_spread:g} grey levels "
            f"({m.spread:.0f}); send an image of one white blood cell"
        )
    if m.foreign_colour > t.foreign_colour:
        return InputKind.NOT_A_CELL_IMAGE, (
            f"not a stained blood-cell image: {100 * m.foreign_colour:.0f}% of the pixels have colours no "
            "stained blood film has (green, yellow or vivid primaries)"
        )
    if m.colourful < t.min_colourful:
        return InputKind.NOT_A_CELL_IMAGE, (
            f"not a stained blood-cell image: only {100 * m.colourful:.1f}% of the pixels show any stain "
            "colour (a greyscale or unstained picture)"
        )
    if m.speckle > t.max_speckle:
        return InputKind.NOT_A_CELL_IMAGE, (
            f"not a blood-cell micrograph: neighbouring pixels differ by {m.speckle:.0f} grey levels "
            "(median), like random noise"
        )
    if m.speckle < t.min_speckle:
        return InputKind.NOT_A_CELL_IMAGE, (
            f"not a blood-cell micrograph: neighbouring pixels differ by {m.speckle:.2f} grey levels "
            "(median), smoother than any camera image: a gradient or a computer-made picture"
        )
    if m.flat > t.max_flat:
        return InputKind.NOT_A_CELL_IMAGE, (
            f"not a blood-cell micrograph: {100 * m.flat:.0f}% of the image is perfectly flat colour, like a "
            "drawing or a computer-made picture"
        )
    if m.aspect > t.max_aspect:
        return InputKind.MULTIPLE_CELLS, (
            f"a {m.width}x{m.height} field (aspect {m.aspect:.2f}) of a smear, not a single-cell image "
            "(a square crop around one white cell); crop it around one white cell"
        )
    if m.nuclei == 0:
        return InputKind.NO_CELL, (
            "no white blood cell found: nothing in the image looks like a stained white-cell nucleus "
            "(red cells, platelets or background only)"
        )
    if m.nuclei > 1:
        return InputKind.MULTIPLE_CELLS, (
            f"{m.nuclei} white-cell nuclei apart from each other: a smear or several cells, not a "
            "single-cell image; crop the image around one white cell"
        )
    if m.edge_contact > t.max_edge_contact and m.centre_gap > 0:
        return InputKind.MULTIPLE_CELLS, (
            "the white cell is cut by the frame's edge and the frame's centre is off it: a crop of a smear "
            "or field, not a single-cell image; crop the image around one whole white cell"
        )
    if m.centre_offset > t.max_centre_offset:
        return InputKind.MULTIPLE_CELLS, (
            f"the white cell is off centre ({100 * m.centre_offset:.0f}% of the frame from the middle): a "
            "crop of a smear or field, not a single-cell image; crop the image around the white cell"
        )
    if m.cell_fraction < t.min_cell_fraction:
        return InputKind.MULTIPLE_CELLS, (
            f"the white cell covers only {100 * m.cell_fraction:.1f}% of the frame: a field of many cells, "
            "not a single-cell image; crop the image around the white cell"
        )
    return InputKind.SINGLE_CELL, "one white cell, centred"


def check_input(
    pixels: NDArray[np.uint8], thresholds: Thresholds = THRESHOLDS, working: Working | None = None
) -> InputCheck:
    """Measures a decoded ``H x W x 3`` uint8 RGB image and says what kind of image it is (``working``: as
    for :func:`measure_input`)."""
    measurements = measure_input(pixels, thresholds, working)
    kind, reason = classify_measurements(measurements, thresholds)
    return InputCheck(kind, reason, measurements)
