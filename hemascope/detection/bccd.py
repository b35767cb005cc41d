"""BCCD (Pascal VOC XML) to an Ultralytics dataset, with bad boxes clipped or dropped and every one counted.

Source layout: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<split>.txt``. VOC corners
are read as pixel coordinates on ``[0, width] x [0, height]`` (BCCD uses ``xmax == width`` for boxes touching
the right edge). The real image size wins over the XML ``<size>``: it is what the detector sees.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from hemascope.detection.yolo_dataset import ConversionReport, OutputDir, yolo_label_line

BCCD_CLASSES: tuple[str, ...] = ("WBC", "RBC", "Platelets")
SPLITS: tuple[str, ...] = ("train", "val")
MIN_SIDE_PX = 1.0
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_EXIF_ORIENTATION = 274


@dataclass(frozen=True)
class VocObject:
    name: str  # as written in the XML, whitespace and all
    box: tuple[str, str, str, str] | None  # xmin, ymin, xmax, ymax as written; None when <bndbox> is missing


@dataclass(frozen=True)
class VocAnnotation:
    filename: str
    width: int | None  # from <size>; None when missing or not a positive integer
    height: int | None
    objects: list[VocObject] = field(default_factory=list)


@dataclass(frozen=True)
class BoxOutcome:
    """A box in pixels after clipping, or the reason it was dropped."""

    box: tuple[float, float, float, float] | None
    clipped: bool = False
    reason: str | None = None


def _text(node: ET.Element | None, path: str) -> str | None:
    found = node.find(path) if node is not None else None
    return found.text if found is not None and found.text is not None else None


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(float(text)) if text is not None else 0
    except ValueError:
        return None
    return value if value > 0 else None


def parse_voc(path: Path) -> VocAnnotation:
    """Reads one Pascal VOC annotation file without judging it (see :func:`clip_box`)."""
    root = ET.parse(path).getroot()
    objects = []
    for node in root.iter("object"):
        bndbox = node.find("bndbox")
        corners = tuple(_text(bndbox, key) or "" for key in ("xmin", "ymin", "xmax", "ymax"))
        box = (corners[0], corners[1], corners[2], corners[3]) if bndbox is not None else None
        objects.append(VocObject(name=_text(node, "name") or "", box=box))
    return VocAnnotation(
        filename=(_text(root, "filename") or "").strip(),
        width=_positive_int(_text(root, "size/width")),
        height=_positive_int(_text(root, "size/height")),
        objects=objects,
    )


def normalise_class_name(raw: str, classes: Sequence[str]) -> str | None:
    """The class a raw name means: stray whitespace and letter case are forgiven; anything else is unknown."""
    name = " ".join(raw.split())
    if name in classes:
        return name
    by_lower = {c.lower(): c for c in classes}
    return by_lower.get(name.lower())


def clip_box(corners: tuple[str, str, str, str] | None, width: int, height: int) -> BoxOutcome:
    """Clips a VOC box to the image; drops it as unparseable, degenerate, outside_image or too_small."""
    if corners is None:
        return BoxOutcome(None, reason="unparseable")
    try:
        x0, y0, x1, y1 = (float(c) for c in corners)
    except ValueError:
        return BoxOutcome(None, reason="unparseable")
    if x1 <= x0 or y1 <= y0:
        return BoxOutcome(None, reason="degenerate")  # zero or negative area as annotated
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return BoxOutcome(None, clipped, reason="outside_image")  # nothing of it left inside the image
    if cx1 - cx0 < MIN_SIDE_PX or cy1 - cy0 < MIN_SIDE_PX:
        return BoxOutcome(None, clipped, reason="too_small")
    return BoxOutcome((cx0, cy0, cx1, cy1), clipped)


def to_yolo(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """Pixel corners to normalised centre x, centre y, width, height."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height


def image_size(path: Path) -> tuple[int, int]:
    """Width and height as a detector sees the image (EXIF rotation applied), reading only the header."""
    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(_EXIF_ORIENTATION) in {5, 6, 7, 8}:
            width, height = height, width
    return width, height


def _find_image(images: Path, image_id: str, filename: str) -> Path | None:
    candidates = [images / f"{image_id}{suffix}" for suffix in _IMAGE_SUFFIXES]
    if filename:
        candidates.append(images / Path(filename).name)
    return next((p for p in candidates if p.is_file()), None)


def read_split(source: Path, split: str) -> list[str]:
    listing = source / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"split list not found: {listing}")
    ids = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
    return list(dict.fromkeys(i for i in ids if i))


def convert_image(
    annotation: VocAnnotation,
    image: Path,
    split: str,
    report: ConversionReport,
    classes: Sequence[str] = BCCD_CLASSES,
) -> list[str]:
    """The YOLO label lines of one image; counts every kept, clipped and dropped box into ``report``."""
    width, height = image_size(image)
    if (annotation.width, annotation.height) != (width, height):
        report.size_mismatches.append(
            f"{image.name}: XML {annotation.width}x{annotation.height}, image {width}x{height}"
        )
    lines = []
    for obj in annotation.objects:
        detail = {"name": obj.name, "box": list(obj.box) if obj.box else None}
        cls = normalise_class_name(obj.name, classes)
        if cls is None:
            report.unknown_classes[obj.name] = report.unknown_classes.get(obj.name, 0) + 1
            report.count_dropped("unknown_class", image.name, detail)
            continue
        if cls != obj.name:
            report.normalised_names[obj.name] = report.normalised_names.get(obj.name, 0) + 1
        outcome = clip_box(obj.box, width, height)
        if outcome.box is None:
            report.count_dropped(outcome.reason or "unknown", image.name, detail)
            continue
        report.boxes_clipped += outcome.clipped
        report.count_kept(split, cls)
        lines.append(yolo_label_line(classes.index(cls), *to_yolo(outcome.box, width, height)))
    if not lines:
        report.images_without_objects += 1
    return lines


def convert_bccd(source: Path, out: Path, splits: Sequence[str] = SPLITS) -> ConversionReport:
    """Converts the BCCD splits under ``source`` to an Ultralytics dataset at ``out`` (replaced if there)."""
    source = source.expanduser().resolve()
    if not (source / "Annotations").is_dir():
        raise FileNotFoundError(f"not a Pascal VOC dataset (no Annotations/): {source}")
    report = ConversionReport(kind="bccd", source=str(source), out=str(out), classes=list(BCCD_CLASSES))
    ids_by_split = {split: read_split(source, split) for split in splits}
    target = OutputDir(out)
    for split, ids in ids_by_split.items():
        report.images[split] = 0
        report.boxes_kept[split] = dict.fromkeys(BCCD_CLASSES, 0)
        for image_id in ids:
            xml = source / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                report.missing_annotations.append(f"{split}/{image_id}")
                continue
            annotation = parse_voc(xml)
            image = _find_image(source / "JPEGImages", image_id, annotation.filename)
            if image is None:
                report.missing_images.append(f"{split}/{image_id}")
                continue
            lines = convert_image(annotation, image, split, report)
            target.write(split, image, image.name, lines)
            report.images[split] += 1
    seen = [set(ids) for ids in ids_by_split.values()]
    overlap = set.intersection(*seen) if len(seen) > 1 else set()
    if overlap:
        report.notes.append(f"{len(overlap)} image ids are listed in more than one split")
    report.notes.append("BCCD under-annotates red cells: RBC recall and precision are measured against gaps")
    target.finish(report, list(ids_by_split))
    return report
