"""The image sets of the input-check benchmark: single cells of three laboratories, and what is not one.

Every set is deterministic (seeded samples and generators); images are yielded as decoded RGB uint8 arrays
with a name. Single cells (must pass): seeded samples of ``bloodcells-5class`` (both splits),
``jhu-cellavision`` and ``probe-pbc-neutrophil``. Not single cells (must never pass):

- ``bccd-smear``: every BCCD smear photograph (640 x 480, usually one white cell among many red cells);
- ``bccd-crop-several``: seeded square crops of BCCD smears holding two white cells, or one whose centre
  lies well off the crop's centre (by the VOC boxes);
- ``bccd-crop-no-wbc``: seeded square crops that touch no white-cell box (red cells and platelets only);
- ``blank``: uniform fields of film-like and other colours, with sensor-like noise, JPEG-compressed;
- ``unrelated``: photographs shipped with scikit-learn and crops of them, gradients, noise, text and
  geometric drawings (some with a purple disk in the middle).

``bccd-crop-centred`` (square crops with exactly one white cell near the centre: single-cell images of a
fourth laboratory) is reported for information; it is in neither target.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from hemascope.detection.bccd import clip_box, normalise_class_name, parse_voc

Pixels = NDArray[np.uint8]
LAB_SETS = ("bloodcells-5class", "jhu-cellavision", "probe-pbc-neutrophil")
NEGATIVE_SETS = ("bccd-smear", "bccd-crop-several", "bccd-crop-no-wbc", "blank", "unrelated")
INFO_SETS = ("bccd-crop-centred",)
#: a white cell is "near the centre" of a crop within this fraction of its side, "well off" beyond OFF
CENTRED, OFF = 0.1, 0.3
#: BCCD white cells are 100-340 px wide; the few smaller "WBC" boxes mark platelets (annotation errors)
MIN_WBC_SIDE = 60


@dataclass(frozen=True)
class Sample:
    name: str
    load: Callable[[], Pixels]


def _file(path: Path) -> Sample:
    return Sample(path.name, lambda: np.asarray(Image.open(path).convert("RGB")))


def lab_samples(data: Path, name: str, count: int, seed: int = 0) -> list[Sample]:
    files = sorted((data / name).rglob("*.jpg"))
    chosen = random.Random(f"{seed}:{name}").sample(files, min(count, len(files)))
    return [_file(path) for path in sorted(chosen)]


def _wbc_boxes(data: Path, stem: str) -> list[tuple[float, float, float, float]]:
    annotation = parse_voc(data / "bccd" / "Annotations" / f"{stem}.xml")
    with Image.open(data / "bccd" / "JPEGImages" / f"{stem}.jpg") as image:
        width, height = image.size
    boxes = []
    for obj in annotation.objects:
        if normalise_class_name(obj.name, ("WBC", "RBC", "Platelets")) != "WBC":
            continue
        outcome = clip_box(obj.box, width, height)
        if (
            outcome.box is not None
            and min(outcome.box[2] - outcome.box[0], outcome.box[3] - outcome.box[1]) >= MIN_WBC_SIDE
        ):
            boxes.append(outcome.box)
    return boxes


def _crop_loader(path: Path, box: tuple[int, int, int, int]) -> Callable[[], Pixels]:
    def load() -> Pixels:
        return np.asarray(Image.open(path).convert("RGB").crop(box))

    return load


def _jpeg_loader(picture: Image.Image) -> Callable[[], Pixels]:
    def load() -> Pixels:
        return _jpeg(picture)

    return load


def bccd_smears(data: Path) -> list[Sample]:
    return [_file(path) for path in sorted((data / "bccd" / "JPEGImages").glob("*.jpg"))]


def _crop_kind(window: tuple[float, float, float], boxes: list[tuple[float, float, float, float]]) -> str:
    """ "no-wbc", "several", "centred" or "" (ambiguous: skipped) for a square window (x0, y0, side)."""
    x0, y0, side = window
    inside, touching = [], 0
    for bx0, by0, bx1, by1 in boxes:
        ix = max(0.0, min(bx1, x0 + side) - max(bx0, x0))
        iy = max(0.0, min(by1, y0 + side) - max(by0, y0))
        if ix * iy > 0:
            touching += 1
        if ix * iy >= 0.5 * (bx1 - bx0) * (by1 - by0):
            inside.append(((bx0 + bx1) / 2 - x0 - side / 2, (by0 + by1) / 2 - y0 - side / 2))
    if touching == 0:
        return "no-wbc"
    if len(inside) >= 2:
        return "several"
    if len(inside) == 1 and touching == 1:
        offset = max(abs(inside[0][0]), abs(inside[0][1])) / side
        if offset > OFF:
            return "several"
        if offset < CENTRED:
            return "centred"
    return ""


def bccd_crops(data: Path, per_kind: int, seed: int = 0) -> dict[str, list[Sample]]:
    """Seeded square crops of the BCCD smears, sorted by what they hold (at most ``per_kind`` each)."""
    rng = random.Random(f"{seed}:bccd-crops")
    stems = sorted(path.stem for path in (data / "bccd" / "JPEGImages").glob("*.jpg"))
    found: dict[str, list[Sample]] = {"several": [], "no-wbc": [], "centred": []}
    for _ in range(200 * per_kind):
        if all(len(found[kind]) >= per_kind for kind in found):
            break
        stem = rng.choice(stems)
        side = rng.randint(160, 440)
        x0, y0 = rng.randint(0, 640 - side), rng.randint(0, 480 - side)
        kind = _crop_kind((x0, y0, side), _wbc_boxes(data, stem))
        if kind and len(found[kind]) < per_kind:
            path = data / "bccd" / "JPEGImages" / f"{stem}.jpg"
            box = (x0, y0, x0 + side, y0 + side)
            found[kind].append(Sample(f"{stem}@{x0},{y0},{side}", _crop_loader(path, box)))
    return {f"bccd-crop-{kind}": samples for kind, samples in found.items()}


def _jpeg(image: Image.Image, quality: int = 90) -> Pixels:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


BLANK_COLOURS = (
    (255, 255, 255),
    (0, 0, 0),
    (128, 128, 128),
    (245, 222, 200),  # a beige film background
    (232, 226, 230),  # a grey film background
    (220, 170, 175),  # pink, like a red cell
    (150, 110, 190),  # lilac
    (40, 60, 160),
    (30, 160, 60),
)


def blanks(seed: int = 0) -> list[Sample]:
    out = []
    for index, colour in enumerate(BLANK_COLOURS):
        for size, noise in (((360, 363), 0), ((400, 400), 2), ((640, 480), 3)):

            def load(
                colour: tuple[int, int, int] = colour,
                size: tuple[int, int] = size,
                noise: int = noise,
                index: int = index,
            ) -> Pixels:
                rng = np.random.default_rng(seed + index)
                field = np.full((size[1], size[0], 3), colour, np.int16)
                field += rng.integers(-noise, noise + 1, field.shape, dtype=np.int16)
                return _jpeg(Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)))

            out.append(Sample(f"blank-{colour}-{size[0]}x{size[1]}-n{noise}", load))
    return out


def _gradient(rng: random.Random, size: int) -> Image.Image:
    a = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    b = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    shape = rng.choice(["h", "v", "d", "r"])
    t = {"h": xx, "v": yy, "d": (xx + yy) / 2, "r": np.clip(np.hypot(xx - 0.5, yy - 0.5) * 1.4, 0, 1)}[shape]
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def _noise(rng: random.Random, size: int) -> Image.Image:
    gen = np.random.default_rng(rng.randint(0, 2**31))
    kind = rng.choice(["uniform", "gaussian", "smooth", "grey"])
    if kind == "uniform":
        return Image.fromarray(gen.integers(0, 256, (size, size, 3), dtype=np.uint8))
    if kind == "grey":
        return Image.fromarray(np.repeat(gen.integers(0, 256, (size, size, 1), dtype=np.uint8), 3, axis=2))
    values = gen.normal(128, 50, (size, size, 3))
    image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(4)) if kind == "smooth" else image


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _drawing(rng: random.Random, size: int, purple_centre: bool) -> Image.Image:
    image = Image.new("RGB", (size, size), rng.choice([(255, 255, 255), (245, 240, 230), _colour(rng)]))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randint(0, size - 20), rng.randint(0, size - 20)
        x1, y1 = rng.randint(x0 + 10, size), rng.randint(y0 + 10, size)
        shape = rng.choice(["ellipse", "rectangle", "line", "text"])
        if shape == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng))
        elif shape == "line":
            draw.line((x0, y0, x1, y1), fill=_colour(rng), width=rng.randint(1, 8))
        else:
            draw.text((x0, y0), "Hemascope 0123 ABC", fill=_colour(rng), font_size=rng.randint(12, 48))
    if purple_centre:
        r = size * rng.uniform(0.12, 0.3)
        c = size / 2
        draw.ellipse((c - r, c - r, c + r, c + r), fill=(rng.randint(90, 140), rng.randint(30, 70), 160))
    return image


def _photo_crops(rng: random.Random, count: int) -> Iterator[tuple[str, Image.Image]]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    for index, photo in enumerate(photos.images):
        image = Image.fromarray(photo)
        yield f"photo{index}", image
        for k in range(count):
            side = rng.randint(120, min(image.size))
            x0, y0 = rng.randint(0, image.size[0] - side), rng.randint(0, image.size[1] - side)
            yield f"photo{index}-crop{k}", image.crop((x0, y0, x0 + side, y0 + side))


def unrelated(count: int, seed: int = 0) -> list[Sample]:
    """``count`` generated pictures (gradients, noise, drawings: a quarter of those with a purple disk
    in the middle) plus the scikit-learn photographs and ten crops of each."""
    rng = random.Random(f"{seed}:unrelated")
    pictures: list[tuple[str, Image.Image]] = list(_photo_crops(rng, 10))
    for index in range(count):
        size = rng.choice([224, 360, 400])
        kind = ("gradient", "noise", "drawing", "purple")[index % 4]
        if kind == "gradient":
            picture = _gradient(rng, size)
        elif kind == "noise":
            picture = _noise(rng, size)
        else:
            picture = _drawing(rng, size, purple_centre=kind == "purple")
        pictures.append((f"{kind}{index}", picture))
    return [Sample(name, _jpeg_loader(picture)) for name, picture in pictures]
