"""The gallery of overlays (image, then one column per model) and the deletion/insertion curves plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from services.explain.evaluation.faithfulness import STEPS
from services.explain.evaluation.maps import full_resolution
from services.explain.overlay import overlay

TILE = 150
CAPTION = 14


@dataclass(frozen=True)
class GalleryRow:
    pixels: NDArray[np.uint8]  # the prepared image
    title: str  # e.g. "monocyte (test)"
    heatmaps: Sequence[NDArray[np.float32]]  # one per column after the image
    captions: Sequence[str]  # one per heat map, e.g. "LR: monocyte 0.99"
    cell: NDArray[np.bool_] | None = None  # drawn as a white outline on the overlays


def _tile(pixels: NDArray[np.uint8], caption: str, outline: NDArray[np.bool_] | None) -> Image.Image:
    image = pixels.copy()
    if outline is not None:
        edge = outline & ~ndi.binary_erosion(outline, iterations=2)
        image[edge] = 255
    canvas = Image.new("RGB", (TILE, TILE + CAPTION), "white")
    canvas.paste(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.BILINEAR), (0, CAPTION))
    ImageDraw.Draw(canvas).text((2, 1), caption[:26], fill="black")
    return canvas


def gallery(rows: Sequence[GalleryRow], headers: Sequence[str], path: Path, blocks: int = 2) -> None:
    """The rows in ``blocks`` side-by-side blocks; column ``headers`` above each block."""
    columns = 1 + len(rows[0].heatmaps)
    per_block = -(-len(rows) // blocks)
    width, height = columns * TILE, per_block * (TILE + CAPTION)
    sheet = Image.new("RGB", (blocks * width + (blocks - 1) * 10, height + 18), "white")
    draw = ImageDraw.Draw(sheet)
    for block in range(blocks):
        for col, header in enumerate(["image", *headers]):
            draw.text((block * (width + 10) + col * TILE + 4, 3), header, fill="black")
    for index, row in enumerate(rows):
        block, place = divmod(index, per_block)
        x0, y0 = block * (width + 10), 18 + place * (TILE + CAPTION)
        sheet.paste(_tile(row.pixels, row.title, None), (x0, y0))
        size = row.pixels.shape[0]
        for col, (heat, caption) in enumerate(zip(row.heatmaps, row.captions, strict=True), start=1):
            blended = overlay(row.pixels, full_resolution(heat, size))
            sheet.paste(_tile(blended, caption, row.cell), (x0 + col * TILE, y0))
    path.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the committed PNG small (about a third of the RGB file)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def curves_plot(curves: dict[str, dict[str, NDArray[np.float64]]], path: Path, title: str) -> None:
    """``curves[model][key]`` with keys deletion_cam, deletion_random, insertion_cam, insertion_random:
    mean probability of the explained class per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3.2), sharey=True)
    for ax, (model, c) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        ax.plot(STEPS, c["deletion_cam"], "r-", label="deletion, CAM")
        ax.plot(STEPS, c["deletion_random"], "r--", label="deletion, random")
        ax.plot(STEPS, c["insertion_cam"], "b-", label="insertion, CAM")
        ax.plot(STEPS, c["insertion_random"], "b--", label="insertion, random")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("fraction of pixels")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("probability of explained class")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
