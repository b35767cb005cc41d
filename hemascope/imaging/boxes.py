"""Cell boxes (:class:`Box`, in original-image pixels) and their drawing, shared by the detector service and
its clients (``hemascope detect --draw``, ``hemascope analyze --detect --out``).

Detections drawn on the original image: an outline per cell in its class's colour, a "class score" label
where one fits without covering another label, and a legend below the image (colour, class, count).

Labels are placed greedily, most confident cell first: above the box, inside its top edge, below it,
inside its bottom edge; a label that would overlap one already placed (or leave the image) is left out,
and its box keeps its colour, which the legend explains.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Box:
    """One detection in original-image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    class_name: str
    score: float


CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "WBC": (148, 0, 211),  # violet: stained nuclei are purple already, the outline stays visible
    "RBC": (220, 20, 60),
    "Platelets": (0, 160, 255),
}
PALETTE: tuple[tuple[int, int, int], ...] = ((255, 140, 0), (34, 139, 34), (255, 215, 0), (0, 206, 209))
NAMES = {"WBC": "white cell", "RBC": "red cell", "Platelets": "platelet"}
Rect = tuple[float, float, float, float]


def colour(box: Box) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(box.class_name, PALETTE[box.class_id % len(PALETTE)])


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: Sequence[Box], sizes: Sequence[tuple[float, float]], width: int, height: int
) -> list[Rect | None]:
    """Where each box's label (of ``sizes[i]`` = (w, h)) goes, or None when it fits nowhere free.

    Boxes are served most confident first; the result is in the order of ``boxes``.
    """
    placed: list[Rect] = []
    result: list[Rect | None] = [None] * len(boxes)
    for index in sorted(range(len(boxes)), key=lambda i: -boxes[i].score):
        box, (w, h) = boxes[index], sizes[index]
        x = min(max(0.0, box.x1), max(0.0, width - w))
        for y in (box.y1 - h, box.y1, box.y2, box.y2 - h):
            rect = (x, y, x + w, y + h)
            inside = y >= 0 and y + h <= height
            if inside and not any(_overlaps(rect, other) for other in placed):
                placed.append(rect)
                result[index] = rect
                break
    return result


def _legend_entries(boxes: Sequence[Box]) -> list[tuple[str, tuple[int, int, int]]]:
    counts = Counter(box.class_name for box in boxes)
    colours = {box.class_name: colour(box) for box in boxes}
    ordered = [name for name in CLASS_COLOURS if name in counts] + sorted(set(counts) - set(CLASS_COLOURS))
    return [(f"{NAMES.get(name, name)} ({name}): {counts[name]}", colours[name]) for name in ordered]


def draw_boxes(pixels: NDArray[np.uint8], boxes: Sequence[Box]) -> Image.Image:
    """A copy of the H x W x 3 RGB ``pixels`` with ``boxes`` (original-image pixels) drawn on it and a
    legend strip below."""
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    side = min(image.size)
    line = max(1, round(side / 240))
    font = ImageFont.load_default(size=max(10, round(side / 40)))
    draw = ImageDraw.Draw(image)
    labels = [f"{box.class_name} {box.score:.2f}" for box in boxes]
    sizes = []
    for label in labels:
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        sizes.append((float(right - left + 2 * line), float(bottom - top + 2 * line)))
    for box in sorted(boxes, key=lambda b: b.score):  # the most confident drawn last, on top
        draw.rectangle((box.x1, box.y1, box.x2, box.y2), outline=colour(box), width=line)
    for box, label, rect in zip(
        boxes, labels, place_labels(boxes, sizes, image.width, image.height), strict=True
    ):
        if rect is None:
            continue
        left, top, _, _ = draw.textbbox((0, 0), label, font=font)
        draw.rectangle(rect, fill=colour(box))
        draw.text((rect[0] + line - left, rect[1] + line - top), label, fill=(255, 255, 255), font=font)
    return _with_legend(image, boxes, font)


def _with_legend(
    image: Image.Image, boxes: Sequence[Box], font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> Image.Image:
    entries = _legend_entries(boxes) or [("no cells found", (128, 128, 128))]
    size = round(font.size) if isinstance(font, ImageFont.FreeTypeFont) else 10
    pad = max(4, size // 2)
    strip = size + 2 * pad
    canvas = Image.new("RGB", (image.width, image.height + strip), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = pad, image.height + pad
    for text, fill in entries:
        draw.rectangle((x, y, x + size, y + size), fill=fill)
        draw.text((x + size + pad // 2, y), text, fill=(20, 20, 20), font=font)
        x += size + pad + round(draw.textlength(text, font=font)) + 2 * pad
    return canvas


def save_drawing(pixels: NDArray[np.uint8], boxes: Sequence[Box], path: Path) -> Path:
    """Draws ``boxes`` on ``pixels`` and writes a PNG to ``path`` (its folder is created); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_boxes(pixels, boxes).save(path, format="PNG")
    return path
