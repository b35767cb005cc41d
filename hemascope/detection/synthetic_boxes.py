"""The study's "detection" variant: single-cell images, each given one fixed box labelled with its class.

Every image of ../shared/data/bloodcells-5class gets the same box (centre 0.5/0.5, width and height 0.8).
This reproduces the study, but its mAP is not a detection result: see :data:`README_TEXT`, which is written
beside the dataset.
"""

from __future__ import annotations

from pathlib import Path

from hemascope.datasets import CLASSES, scan_dataset
from hemascope.detection.yolo_dataset import ConversionReport, OutputDir, yolo_label_line

SYNTHETIC_BOX: tuple[float, float, float, float] = (0.5, 0.5, 0.8, 0.8)
SPLITS: tuple[str, ...] = ("train", "val")

README_TEXT = """\
# Synthetic-box dataset: its mAP is not a detection result

Written by `hemascope data cells-to-yolo` from a folder-per-class dataset of single-cell images
({source}). Every image carries exactly one box, the same for all of them: centre (0.5, 0.5), width and
height 0.8 of the image, labelled with the image's cell class. This is how the study built its
"detection" data; it is kept so that the study's numbers can be reproduced, not because it measures
detection.

Why mAP on these data is not a detection result:

- **The box carries no information.** It is identical for every image and never depends on where the
  cell is. A detector learns to emit that one constant box; localisation is never tested, so mAP@0.5
  and mAP@0.5:0.95 reduce to "was the single box given the right class". That is a classification
  score in disguise, and it should be compared with the classifiers' accuracy, not with detection
  results such as BCCD's.
- **One object per image, always centred.** Real smears (BCCD) hold many cells of several types at
  any position, touching and cut by the image edge. None of that occurs here.
- **The source shortcut applies.** Basophils, erythroblasts and monocytes come from one scanner
  (Barcelona, 360x363), myeloblasts and segmented neutrophils from another (Munich, 400x400). Image size,
  border colour and staining alone separate the two groups, so a high score may measure the scanner, not
  the cell (see ../shared/data/README.md and `hemascope audit-data`).
- **Duplicates** (byte-identical, flipped or rotated copies, some across train and val) inflate the
  val score further.

For a detection result, train on real boxes: `hemascope data bccd-to-yolo`.
"""


def convert_cells(
    source: Path, out: Path, box: tuple[float, float, float, float] = SYNTHETIC_BOX
) -> ConversionReport:
    """Writes the synthetic-box Ultralytics dataset of ``source`` (train -> train, val -> val) to ``out``."""
    source = source.expanduser().resolve()
    scan = scan_dataset(source)
    report = ConversionReport(kind="synthetic-box", source=str(source), out=str(out), classes=list(CLASSES))
    target = OutputDir(out)
    line_by_class = {cls: yolo_label_line(i, *box) for i, cls in enumerate(CLASSES)}
    used: dict[str, set[str]] = {split: set() for split in SPLITS}
    for record in scan.records:
        if record.split not in SPLITS:
            key = f"images in split {record.split!r}" if record.split else "images outside train/ and val/"
            report.skipped[key] = report.skipped.get(key, 0) + 1
            continue
        name = record.path.name
        if name in used[record.split]:  # same file name in two class folders: keep both, apart
            name = f"{record.label}__{name}"
        used[record.split].add(name)
        target.write(record.split, record.path, name, [line_by_class[record.label]])
        report.images[record.split] = report.images.get(record.split, 0) + 1
        report.count_kept(record.split, record.label)
    for folder in scan.unknown_folders:
        key = f"folder {folder.relative_to(source)} (not a class)"
        report.skipped[key] = sum(1 for p in folder.rglob("*") if p.is_file())
    if scan.skipped_files:
        report.skipped["files that are not images"] = len(scan.skipped_files)
    missing = [s for s in SPLITS if not report.images.get(s)]
    if missing:
        raise ValueError(
            f"no images for split(s) {missing} under {source} (expected {source}/<split>/<class>/)"
        )
    report.notes.append(
        f"one synthetic box per image (cx, cy, w, h = {box}): mAP here is a classification score, "
        "not a detection result (see README.md)"
    )
    target.finish(report, list(SPLITS), extra={"README.md": README_TEXT.format(source=source)})
    return report
