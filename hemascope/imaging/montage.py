"""A montage of preprocessing options: rows are images, columns are options (each tile is ``prepare``'s
output), with the option names on top and each image's file name (and any fallback) on its row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hemascope.imaging.preprocess import get_preprocessing

_HEADER = 18
_LABEL = 130


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def preprocessing_montage(
    image_paths: Sequence[Path], option_names: Sequence[str], out_png: Path, *, tile: int = 128
) -> Path:
    """Writes the montage PNG to ``out_png`` (parents created) and returns the path.

    Unknown option names raise ``NotFound``; a tile whose preprocessing fell back is marked with a red
    frame and the fallback listed under the file name.
    """
    options = [get_preprocessing(name) for name in option_names]
    width = _LABEL + tile * len(options)
    height = _HEADER + tile * len(image_paths)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for col, option in enumerate(options):
        draw.text((_LABEL + col * tile + 3, 3), option.name, fill=(0, 0, 0))
    for row, path in enumerate(image_paths):
        pixels = _decode(Path(path))
        top = _HEADER + row * tile
        notes: list[str] = []
        for col, option in enumerate(options):
            prepared = option.prepare_report(pixels)
            image = Image.fromarray(prepared.pixels).resize((tile, tile), Image.Resampling.BILINEAR)
            left = _LABEL + col * tile
            canvas.paste(image, (left, top))
            if prepared.fallbacks:
                draw.rectangle((left, top, left + tile - 1, top + tile - 1), outline=(220, 0, 0), width=3)
                notes.extend(f"{option.name}: {reason}" for reason in prepared.fallbacks)
        label = [Path(path).parent.name, Path(path).name, *notes[:4]]
        draw.multiline_text((4, top + 4), "\n".join(label), fill=(0, 0, 0), spacing=2)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png
