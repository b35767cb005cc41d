"""The pictures the commands write, with one naming scheme for all of them.

Per image ``<name>`` (the file's stem) in the output folder: ``<name>-overlay.png`` (the heat map over the
image, at its size), ``<name>-panel.png`` (the image beside its overlay with the model, class, probability
and a colour bar) and ``<name>-boxes.png`` (the cells found, with a legend). A second model explained on
the same image adds its name: ``<name>-<model>-panel.png``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hemascope.v1 import detector_pb2


def picture_path(out: Path, name: str, kind: str, model: str = "") -> Path:
    """``out/<name>-<kind>.png``, or ``out/<name>-<model>-<kind>.png`` for a named model."""
    return out / (f"{name}-{model}-{kind}.png" if model else f"{name}-{kind}.png")


@dataclass(frozen=True)
class Explained:
    """What an explanation says, whichever API it came from (they share the field names)."""

    overlay_png: bytes
    model: str
    method: str
    class_name: str
    class_probability: float
    overlay: str = "focus"


def write_explanation(
    out: Path,
    name: str,
    image_name: str,
    pixels: NDArray[np.uint8],
    explained: Explained,
    model_tag: str = "",
) -> list[Path]:
    """Writes the overlay and the panel of one explanation under ``out``; returns the files written."""
    from PIL import Image

    from services.explain.panel import PanelText, save_panel

    out.mkdir(parents=True, exist_ok=True)
    overlay = picture_path(out, name, "overlay", model_tag)
    overlay.write_bytes(explained.overlay_png)
    blended = np.asarray(Image.open(io.BytesIO(explained.overlay_png)).convert("RGB"))
    text = PanelText(
        image_name,
        explained.model,
        explained.method,
        explained.class_name,
        explained.class_probability,
        explained.overlay or "focus",
    )
    panel = save_panel(pixels, blended, text, picture_path(out, name, "panel", model_tag))
    return [overlay, panel]


def write_boxes(out: Path, name: str, pixels: NDArray[np.uint8], boxes: Sequence[detector_pb2.Box]) -> Path:
    """Writes the drawing of ``boxes`` (detector messages) on ``pixels`` under ``out``; returns it."""
    from hemascope.imaging.boxes import Box, save_drawing

    drawn = [Box(b.x1, b.y1, b.x2, b.y2, b.class_id, b.class_name, b.score) for b in boxes]
    return save_drawing(pixels, drawn, picture_path(out, name, "boxes"))
