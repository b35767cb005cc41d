"""Detections drawn on the original image: a box and a "class score" label per detection, saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from services.detector.core import Box

CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "WBC": (148, 0, 211),  # violet: stained nuclei are purple already, the outline stays visible
    "RBC": (220, 20, 60),
    "Platelets": (0, 160, 255),
}
PALETTE: tuple[tuple[int, int, int], ...] = ((255, 140, 0), (34, 139, 34), (255, 215, 0), (0, 206, 209))


def colour(box: Box) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(box.class_name, PALETTE[box.class_id % len(PALETTE)])


def draw_boxes(pixels: NDArray[np.uint8], boxes: Sequence[Box]) -> Image.Image:
    """A copy of the H x W x 3 RGB ``pixels`` with ``boxes`` (original-image pixels) drawn on it."""
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    side = min(image.size)
    width = max(1, round(side / 240))
    font = ImageFont.load_default(size=max(10, round(side / 40)))
    draw = ImageDraw.Draw(image)
    for box in sorted(boxes, key=lambda b: b.score):  # the most confident drawn last, on top
        fill = colour(box)
        draw.rectangle((box.x1, box.y1, box.x2, box.y2), outline=fill, width=width)
        label = f"{box.class_name} {box.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = right - left + 2 * width, bottom - top + 2 * width
        y = box.y1 - text_h if box.y1 >= text_h else box.y1  # above the box, or inside it at the top edge
        x = min(box.x1, max(0.0, image.width - text_w))
        draw.rectangle((x, y, x + text_w, y + text_h), fill=fill)
        draw.text((x + width - left, y + width - top), label, fill=(255, 255, 255), font=font)
    return image


def save_drawing(pixels: NDArray[np.uint8], boxes: Sequence[Box], path: Path) -> Path:
    """Draws ``boxes`` on ``pixels`` and writes a PNG to ``path`` (its folder is created); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_boxes(pixels, boxes).save(path, format="PNG")
    return path
