"""The explanation as a picture to read: the cell as imaged beside the heat-map overlay, a title naming the
model, method, class and probability, and a colour bar saying what the colours mean.

PIL and NumPy only (no OpenCV or PyTorch), so clients such as ``hemascope analyze`` draw it from an
explanation's overlay PNG and the image they sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from services.explain.colormap import HEAT_THRESHOLD, jet

TILE_HEIGHT = 320
GAP = 12
MARGIN = 12
BAR_WIDTH = 18
TEXT_RGB = (20, 20, 20)
MUTED_RGB = (90, 90, 90)
METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "ablationcam": "Ablation-CAM"}


@dataclass(frozen=True)
class PanelText:
    """What the panel says: the image, the model and method, the class explained and its probability."""

    image: str
    model: str
    method: str
    class_name: str
    probability: float
    overlay: str = "focus"

    @property
    def title(self) -> str:
        method = METHODS.get(self.method, self.method)
        return f"{self.image}: {self.model} ({method}) explains {self.class_name}, p = {self.probability:.2f}"

    @property
    def note(self) -> str:
        if self.overlay == "jet40":
            return "heat over the whole image at 40% (the study's overlay)"
        return f"colour only where the heat is at least {HEAT_THRESHOLD:.0%}; white line: the cell found"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _tile(pixels: NDArray[np.uint8]) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    width = max(1, round(image.width * TILE_HEIGHT / image.height))
    return image.resize((width, TILE_HEIGHT), Image.Resampling.LANCZOS)


def colour_bar(height: int, width: int = BAR_WIDTH) -> NDArray[np.uint8]:
    """A vertical JET bar, hottest at the top; grey below the overlay's threshold (no colour drawn there)."""
    values = np.linspace(1.0, 0.0, height, dtype=np.float32)
    rows = np.asarray(np.round(jet(values) * 255), dtype=np.uint8)
    rows[values < HEAT_THRESHOLD] = (200, 200, 200)
    return np.repeat(rows[:, None, :], width, axis=1)


def render_panel(original: NDArray[np.uint8], overlay: NDArray[np.uint8], text: PanelText) -> Image.Image:
    """Original | overlay | colour bar, a title above and a line of explanation below."""
    left, right = _tile(original), _tile(overlay)
    title_font, small = _font(16), _font(12)
    label_width = 44
    width = MARGIN + left.width + GAP + right.width + GAP + BAR_WIDTH + 4 + label_width + MARGIN
    width = max(width, round(title_font.getlength(text.title)) + 2 * MARGIN)
    top = MARGIN + 24
    height = top + TILE_HEIGHT + 18 + 20 + MARGIN
    panel = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((MARGIN, MARGIN), text.title, fill=TEXT_RGB, font=title_font)
    panel.paste(left, (MARGIN, top))
    x_right = MARGIN + left.width + GAP
    panel.paste(right, (x_right, top))
    below = top + TILE_HEIGHT + 3
    draw.text((MARGIN, below), "as imaged", fill=MUTED_RGB, font=small)
    draw.text((x_right, below), f"where {text.model} looked", fill=MUTED_RGB, font=small)
    x_bar = x_right + right.width + GAP
    panel.paste(Image.fromarray(colour_bar(TILE_HEIGHT)), (x_bar, top))
    labels = (
        (top, "high"),
        (top + round((1 - HEAT_THRESHOLD) * TILE_HEIGHT) - 7, f"{HEAT_THRESHOLD:.0%}"),
        (top + TILE_HEIGHT - 12, "low"),
    )
    for y, label in labels:
        draw.text((x_bar + BAR_WIDTH + 4, y), label, fill=MUTED_RGB, font=small)
    draw.text((MARGIN, below + 18), text.note, fill=MUTED_RGB, font=small)
    return panel


def save_panel(original: NDArray[np.uint8], overlay: NDArray[np.uint8], text: PanelText, path: Path) -> Path:
    """Writes the panel as PNG to ``path`` (its folder is created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    render_panel(original, overlay, text).save(path, format="PNG")
    return path
