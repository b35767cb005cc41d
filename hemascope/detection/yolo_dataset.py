"""The Ultralytics dataset layout, written by the converters, and the report of a conversion.

``OUT/images/<split>/*`` are symlinks to the source images (never copies), ``OUT/labels/<split>/*.txt`` hold
one ``class cx cy w h`` line per box (normalised to 0..1), ``OUT/data.yaml`` names the splits and classes
with an absolute ``path`` and ``OUT/conversion.json`` is the :class:`ConversionReport`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "conversion.json"
DATA_YAML = "data.yaml"


@dataclass
class ConversionReport:
    """What a conversion kept, changed and dropped. Every count is reported; nothing is dropped silently."""

    kind: str  # "bccd" (real boxes) or "synthetic-box" (one fixed box per single-cell image)
    source: str
    out: str
    classes: list[str]
    images: dict[str, int] = field(default_factory=dict)  # split -> images written
    boxes_kept: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> boxes
    boxes_clipped: int = 0  # kept, but moved inside the image
    boxes_dropped: dict[str, int] = field(default_factory=dict)  # reason -> boxes
    unknown_classes: dict[str, int] = field(default_factory=dict)  # raw name -> boxes (dropped)
    normalised_names: dict[str, int] = field(default_factory=dict)  # raw name -> boxes renamed to a class
    images_without_objects: int = 0  # written with an empty label file (background images)
    size_mismatches: list[str] = field(default_factory=list)  # XML <size> differs from the JPEG
    missing_images: list[str] = field(default_factory=list)  # listed, but no image file: skipped
    missing_annotations: list[str] = field(default_factory=list)  # listed, but no XML: skipped
    skipped: dict[str, int] = field(default_factory=dict)  # anything else not converted (e.g. other splits)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # one entry per dropped box, for auditing
    notes: list[str] = field(default_factory=list)

    @property
    def total_kept(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.boxes_kept.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.boxes_dropped.values())

    def count_kept(self, split: str, cls: str) -> None:
        per_class = self.boxes_kept.setdefault(split, dict.fromkeys(self.classes, 0))
        per_class[cls] = per_class.get(cls, 0) + 1

    def count_dropped(self, reason: str, image: str, detail: dict[str, Any]) -> None:
        self.boxes_dropped[reason] = self.boxes_dropped.get(reason, 0) + 1
        self.dropped.append({"image": image, "reason": reason, **detail})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_kept"] = self.total_kept
        data["total_dropped"] = self.total_dropped
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConversionReport:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_text(self) -> str:
        lines = [f"{self.kind} conversion: {self.source} -> {self.out}"]
        for split, n in self.images.items():
            per_class = self.boxes_kept.get(split, {})
            boxes = ", ".join(f"{c} {per_class.get(c, 0)}" for c in self.classes)
            lines.append(f"  {split}: {n} images, {sum(per_class.values())} boxes ({boxes})")
        lines.append(f"  boxes kept: {self.total_kept} (of which clipped to the image: {self.boxes_clipped})")
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.boxes_dropped.items())) or "none"
        lines.append(f"  boxes dropped: {self.total_dropped} ({dropped})")
        if self.normalised_names:
            lines.append(f"  class names normalised: {_counts(self.normalised_names)}")
        if self.unknown_classes:
            lines.append(f"  unknown class names (dropped): {_counts(self.unknown_classes)}")
        lines.append(f"  images without objects: {self.images_without_objects}")
        if self.kind == "bccd" or self.size_mismatches:
            lines.append(f"  XML size differs from the image: {len(self.size_mismatches)}")
        if self.missing_images or self.missing_annotations:
            lines.append(
                f"  skipped: {len(self.missing_images)} missing images, "
                f"{len(self.missing_annotations)} missing annotations"
            )
        for what, n in self.skipped.items():
            lines.append(f"  skipped: {what}: {n}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name!r} x{n}" for name, n in sorted(counts.items()))


def yolo_label_line(cls: int, cx: float, cy: float, w: float, h: float) -> str:
    """One YOLO label line: class index, then centre and size normalised to the image (0..1)."""
    for name, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} is not normalised to 0..1")
    return f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def parse_yolo_label_file(path: Path) -> list[tuple[int, float, float, float, float]]:
    """Reads a YOLO label file back; raises ValueError on a malformed line."""
    rows: list[tuple[int, float, float, float, float]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"{path}:{number}: expected 5 fields, got {len(parts)}")
        cx, cy, w, h = (float(p) for p in parts[1:])
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise ValueError(f"{path}:{number}: box not normalised or empty: {line!r}")
        rows.append((int(parts[0]), cx, cy, w, h))
    return rows


class OutputDir:
    """Builds a dataset in ``OUT.partial`` and swaps it into place, so re-running replaces OUT cleanly.

    An existing OUT is replaced only when it is empty or holds an earlier conversion (``conversion.json``):
    a mistyped ``--out`` pointing at some other folder is refused, not deleted.
    """

    def __init__(self, out: Path) -> None:
        self.out = out.expanduser().absolute()
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"{self.out} exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / REPORT_FILE).is_file():
            raise FileExistsError(
                f"{self.out} is not empty and holds no earlier conversion: not replacing it"
            )
        self.work = self.out.with_name(self.out.name + ".partial")
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)

    def image_dir(self, split: str) -> Path:
        path = self.work / "images" / split
        path.mkdir(parents=True, exist_ok=True)
        return path

    def label_dir(self, split: str) -> Path:
        path = self.work / "labels" / split
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, split: str, image: Path, name: str, label_lines: Sequence[str]) -> None:
        """Symlinks ``image`` as ``images/<split>/<name>`` and writes its label file (empty: no objects)."""
        link = self.image_dir(split) / name
        link.symlink_to(image.resolve())
        text = "".join(line + "\n" for line in label_lines)
        (self.label_dir(split) / Path(name).with_suffix(".txt").name).write_text(text, encoding="utf-8")

    def finish(
        self, report: ConversionReport, splits: Sequence[str], extra: dict[str, str] | None = None
    ) -> Path:
        """Writes data.yaml, conversion.json and any extra files, then replaces OUT with the new build."""
        report.out = str(self.out)
        lines = [f"# Written by hemascope ({report.kind} conversion); see {REPORT_FILE}."]
        lines.append(f"path: {json.dumps(str(self.out))}")
        lines += [f"{split}: {json.dumps(f'images/{split}')}" for split in splits]
        lines.append(f"nc: {len(report.classes)}")
        lines.append("names:")
        lines += [f"  {i}: {json.dumps(name)}" for i, name in enumerate(report.classes)]
        (self.work / DATA_YAML).write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.work / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        for name, text in (extra or {}).items():
            (self.work / name).write_text(text, encoding="utf-8")
        if self.out.exists():
            shutil.rmtree(self.out)
        self.work.rename(self.out)
        return self.out / DATA_YAML
