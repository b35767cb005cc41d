"""White cells on a stored smear: which detected boxes are white cells, and the crop of one of them, cut
here from the stored original by the box's index in the stored detection (a browser only ever names an
index, never coordinates)."""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image

WHITE_CELL_CLASSES = frozenset({"wbc", "white_cell", "leukocyte"})
"""Detector class names (lower case) of white blood cells: the BCCD detector calls them ``WBC``."""
CROP_MARGIN = 0.15
"""Context kept around a box on each side, as a share of its width and height (a classifier trained on
single-cell images sees the cell with a little of its surroundings)."""
MAX_BOXES = 10_000


class NoSuchCell(LookupError):
    """The index names no white cell of the smear's stored detection."""


def is_white_cell(class_name: object) -> bool:
    return isinstance(class_name, str) and class_name.lower() in WHITE_CELL_CLASSES


def white_cell_box(report: dict[str, Any], index: int) -> dict[str, Any]:
    """The stored box ``index`` of a smear's report, when it is a white cell; NoSuchCell otherwise."""
    boxes = (report.get("detection") or {}).get("boxes") or []
    if not 0 <= index < min(len(boxes), MAX_BOXES):
        raise NoSuchCell(f"the smear has no detected cell {index}")
    box = boxes[index]
    if not is_white_cell(box.get("class_name")):
        raise NoSuchCell(f"cell {index} is not a white cell ({box.get('class_name')})")
    return dict(box)


def crop_box(image: bytes, box: dict[str, Any], margin: float = CROP_MARGIN) -> bytes:
    """A PNG of ``box`` (original pixel coordinates) cut from the encoded ``image`` with ``margin`` of
    context, clamped to the image; ValueError when the box is empty or outside it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(image)) as opened:
            opened.load()
            picture = opened.convert("RGB")
    x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
    pad_x, pad_y = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y))
    right, bottom = min(picture.width, round(x2 + pad_x)), min(picture.height, round(y2 + pad_y))
    if right - left < 2 or bottom - top < 2:
        raise ValueError("the box is empty or outside the image")
    buffer = io.BytesIO()
    picture.crop((left, top, right, bottom)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
