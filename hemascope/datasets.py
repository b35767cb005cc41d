"""Folder-per-class image datasets (the ../shared/data/bloodcells-5class layout).

``ROOT/<split>/<class>/*.jpg`` with splits such as ``train`` and ``val``, or flat ``ROOT/<class>/*.jpg``.
Folders whose name is not one of :data:`CLASSES` are reported, not read; so are files that are not images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CLASSES: tuple[str, ...] = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
#: Myeloblasts are the blast cells of acute myeloid leukaemia; the other classes are non-malignant.
MALIGNANT_CLASSES: tuple[str, ...] = ("myeloblast",)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: str
    split: str  # "" for a flat dataset


@dataclass
class DatasetScan:
    root: Path
    records: list[ImageRecord] = field(default_factory=list)
    unknown_folders: list[Path] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.records})

    def counts(self) -> dict[tuple[str, str], int]:
        """Images per (split, class)."""
        return dict(Counter((r.split, r.label) for r in self.records))


def _scan_class_dirs(parent: Path, split: str, scan: DatasetScan, classes: tuple[str, ...]) -> None:
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        if folder.name not in classes:
            scan.unknown_folders.append(folder)
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                scan.records.append(ImageRecord(path, folder.name, split))
            elif path.is_file():
                scan.skipped_files.append(path)


def scan_dataset(root: Path, classes: tuple[str, ...] = CLASSES) -> DatasetScan:
    """Lists the images under ``root``; a split layout is recognised when no top folder is a class name."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    scan = DatasetScan(root)
    tops = sorted(p for p in root.iterdir() if p.is_dir())
    if any(p.name in classes for p in tops):
        _scan_class_dirs(root, "", scan, classes)
    else:
        for split_dir in tops:
            _scan_class_dirs(split_dir, split_dir.name, scan, classes)
    return scan
