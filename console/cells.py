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
"""Context kept around a box on each side, as a share of its longer side (a classifier trained on
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
    """A square PNG around ``box`` (original pixel coordinates) cut from the encoded ``image``: centred on
    the box, its longer side plus ``margin`` on each side, moved (and if need be shrunk) to stay inside the
    image, since the classifier's input check expects a square crop around one white cell; ValueError when
    the box is empty or outside the image."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(image)) as opened:
            opened.load()
            picture = opened.convert("RGB")
    x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
    inside = min(x2, picture.width) - max(x1, 0.0) >= 2 and min(y2, picture.height) - max(y1, 0.0) >= 2
    if not inside:
        raise ValueError("the box is empty or outside the image")
    side = min(round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)), picture.width, picture.height)
    left = min(max(0, round((x1 + x2 - side) / 2)), picture.width - side)
    top = min(max(0, round((y1 + y2 - side) / 2)), picture.height - side)
    buffer = io.BytesIO()
    picture.crop((left, top, left + side, top + side)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def white_ordinal(report: dict[str, Any], index: int) -> int:
    """The 1-based place of box ``index`` among the white cells of a report (how the page names it)."""
    boxes = (report.get("detection") or {}).get("boxes") or []
    return sum(1 for box in boxes[: index + 1] if is_white_cell(box.get("class_name")))
