"""The input check on real images: single cells of three laboratories pass; smears, crops of smears with
several or no white cells, blank fields and unrelated pictures do not (and say why)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hemascope.data import REPO_ROOT, shared_data_dir
from hemascope.imaging.inputcheck import (
    InputKind,
    InputMeasurements,
    check_input,
    classify_measurements,
)

DATA = shared_data_dir()
SAMPLES = REPO_ROOT / "samples"


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _jpeg(image: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _first(folder: Path, count: int) -> list[Path]:
    return sorted(folder.glob("*.jpg"))[:count]


SINGLE_CELLS = [
    *_first(DATA / "bloodcells-5class" / "val" / "basophil", 1),
    *_first(DATA / "bloodcells-5class" / "val" / "myeloblast", 1),
    *_first(DATA / "bloodcells-5class" / "val" / "seg_neutrophil", 1),
    *_first(DATA / "jhu-cellavision" / "monocyte", 1),
    *_first(DATA / "jhu-cellavision" / "erythroblast", 1),
    *_first(DATA / "jhu-cellavision" / "myeloblast", 1),
    *_first(DATA / "probe-pbc-neutrophil" / "seg_neutrophil", 2),
    *sorted(SAMPLES.glob("*.jpg")),
]


@pytest.mark.parametrize("path", SINGLE_CELLS, ids=[p.name for p in SINGLE_CELLS])
def test_single_cells_of_every_laboratory_pass(path: Path) -> None:
    check = check_input(_pixels(path))
    assert check.kind is InputKind.SINGLE_CELL, check.reason
    m = check.measurements
    assert m.nuclei == 1 and m.centre_offset < 0.25 and m.cell_fraction > m.nucleus_fraction > 0


BCCD = DATA / "bccd" / "JPEGImages"


@pytest.mark.parametrize("name", ["BloodImage_00000.jpg", "BloodImage_00002.jpg", "BloodImage_00010.jpg"])
def test_bccd_smears_are_smear_fields(name: str) -> None:
    check = check_input(_pixels(BCCD / name))
    assert check.kind is InputKind.MULTIPLE_CELLS
    assert "640x480" in check.reason and "crop" in check.reason


def test_the_smear_sample_is_not_a_single_cell() -> None:
    check = check_input(_pixels(SAMPLES / "smear" / "BloodImage_00002.jpg"))
    assert check.kind is InputKind.MULTIPLE_CELLS and check.reason


def _crop(name: str, box: tuple[int, int, int]) -> np.ndarray:
    x0, y0, side = box
    return _pixels(BCCD / name)[y0 : y0 + side, x0 : x0 + side]


def test_a_crop_with_the_white_cell_off_centre_is_referred() -> None:
    pixels = _pixels(SAMPLES / "MO_100695.jpg")[:250, :250]  # the monocyte near the bottom-right corner
    check = check_input(pixels)
    assert check.kind is InputKind.MULTIPLE_CELLS, check.reason
    assert "off centre" in check.reason or "edge" in check.reason


# Square crops of BCCD smears (by the VOC boxes): two white cells, red cells only.
def test_a_crop_with_two_white_cells_is_several_cells() -> None:
    check = check_input(_crop("BloodImage_00070.jpg", (140, 60, 400)))  # both whole inside
    assert check.kind is InputKind.MULTIPLE_CELLS, check.reason


@pytest.mark.parametrize("box", [(380, 230, 240), (0, 260, 200)])
def test_a_crop_of_red_cells_only_has_no_white_cell(box: tuple[int, int, int]) -> None:
    check = check_input(_crop("BloodImage_00002.jpg", box))
    assert check.kind is InputKind.NO_CELL, check.reason
    assert check.measurements.nuclei == 0 and "no white blood cell" in check.reason


@pytest.mark.parametrize(
    "colour", [(255, 255, 255), (0, 0, 0), (245, 222, 200), (220, 170, 175), (150, 110, 190)]
)
def test_blank_fields_are_blank(colour: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    field = np.clip(np.full((363, 360, 3), colour, np.int16) + rng.integers(-2, 3, (363, 360, 3)), 0, 255)
    check = check_input(_jpeg(Image.fromarray(field.astype(np.uint8))))
    assert check.kind is InputKind.BLANK and "blank" in check.reason


def _gradient() -> Image.Image:
    t = np.linspace(0, 1, 360, dtype=np.float32)[None, :, None]
    a, b = np.array([200, 120, 230], np.float32), np.array([250, 200, 210], np.float32)
    return Image.fromarray(np.repeat(a + (b - a) * t, 360, axis=0).astype(np.uint8))


def _noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (360, 360, 3), dtype=np.uint8))


def _purple_disk_drawing() -> Image.Image:
    """What a naive check would take for a cell: a purple disk in the middle of a light field, with text."""
    image = Image.new("RGB", (360, 360), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 30, 110, 100), fill=(220, 170, 175))
    draw.text((20, 300), "Hemascope 0123", fill=(40, 40, 40), font_size=30)
    draw.ellipse((130, 130, 230, 230), fill=(120, 50, 160))
    return image


def _photo() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[1]).crop((100, 0, 500, 400))


@pytest.mark.parametrize("make", [_gradient, _noise, _purple_disk_drawing, _photo])
def test_unrelated_pictures_are_not_cell_images(make: object) -> None:
    assert callable(make)
    check = check_input(_jpeg(make()))
    assert check.kind in (InputKind.NOT_A_CELL_IMAGE, InputKind.NO_CELL), check.reason


def _measured(**values: float) -> InputMeasurements:
    base = {
        "width": 360,
        "height": 363,
        "spread": 200.0,
        "foreign_colour": 0.0,
        "colourful": 1.0,
        "speckle": 1.0,
        "flat": 0.0,
        "nuclei": 1,
        "stained_fraction": 0.1,
        "nucleus_fraction": 0.1,
        "cell_fraction": 0.2,
        "centre_offset": 0.02,
    }
    return InputMeasurements(**{**base, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "kind", "words"),
    [
        ({}, InputKind.SINGLE_CELL, "one white cell"),
        ({"spread": 3.0, "nuclei": 0}, InputKind.BLANK, "blank"),
        ({"foreign_colour": 0.3}, InputKind.NOT_A_CELL_IMAGE, "colours"),
        ({"colourful": 0.01}, InputKind.NOT_A_CELL_IMAGE, "greyscale"),
        ({"speckle": 40.0}, InputKind.NOT_A_CELL_IMAGE, "noise"),
        ({"speckle": 0.0}, InputKind.NOT_A_CELL_IMAGE, "gradient"),
        ({"flat": 0.6}, InputKind.NOT_A_CELL_IMAGE, "drawing"),
        ({"width": 640, "height": 480}, InputKind.MULTIPLE_CELLS, "aspect 1.33"),
        ({"nuclei": 0}, InputKind.NO_CELL, "no white blood cell"),
        ({"nuclei": 3}, InputKind.MULTIPLE_CELLS, "3 white-cell nuclei"),
        ({"edge_contact": 1.0, "centre_gap": 0.1}, InputKind.MULTIPLE_CELLS, "edge"),
        ({"centre_offset": 0.4}, InputKind.MULTIPLE_CELLS, "off centre (40%"),
        ({"cell_fraction": 0.01}, InputKind.MULTIPLE_CELLS, "1.0% of the frame"),
    ],
)
def test_each_rule_names_its_measurement(values: dict[str, float], kind: InputKind, words: str) -> None:
    found, reason = classify_measurements(_measured(**values))
    assert found is kind and words in reason
