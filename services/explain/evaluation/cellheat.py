"""How much of a map's heat lies on the white cell: the cell segmented by colour
(:mod:`hemascope.imaging.cellseg`) on the ORIGINAL colour image and put into the prepared image's frame (for
a cropping option, the crop's own cell mask; otherwise the segmentation of the resized image), the map
upsampled as the overlay does. A map that ignored the image would put on the cell the share of the image
the cell covers (``area``); ``heat / area`` above 1 means the heat concentrates on the cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from hemascope.imaging.cellseg import crop_cell, segment_cell
from hemascope.imaging.preprocess import Preprocessing


@dataclass(frozen=True)
class CellMask:
    mask: NDArray[np.bool_]  # size x size, the prepared image's frame
    fallback: bool  # no cell found: a centred disk (see cellseg)


def cell_mask(original: NDArray[np.uint8], preprocessing: Preprocessing) -> CellMask:
    """The cell in ``preprocessing``'s frame, from the decoded colour image (the prepared one may be grey)."""
    if preprocessing.cell_crop:
        crop = crop_cell(original, preprocessing.size)
        return CellMask(crop.alpha > 0.5, crop.fallback)
    frame = preprocessing.resize(original)
    seg = segment_cell(frame)
    height, width = frame.shape[:2]
    mask = Image.fromarray(seg.cell.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return CellMask(np.asarray(mask) > 127, seg.fallback)


def heat_share(full_map: NDArray[np.float32], mask: NDArray[np.bool_]) -> float:
    """Share of the map's mass inside ``mask``; NaN for an all-zero map."""
    total = float(full_map.sum())
    return float(full_map[mask].sum()) / total if total > 0 else float("nan")
