"""A small three-laboratory dataset made of symlinks into the shared data, with its YAML spec."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
PER_CLASS = 10  # per class and site
PROBE = 6


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def make_three_labs(data_dir: Path, root: Path, per_class: int = PER_CLASS) -> Path:
    """Writes ``root/spec.yaml`` over symlinked subsets of bloodcells-5class (Barcelona and Munich by
    prefix), jhu-cellavision (patients from its manifest) and the Barcelona probe; returns the spec."""
    for cls in CLASSES:
        for path in sorted((data_dir / "bloodcells-5class" / "train" / cls).glob("*.jpg"))[:per_class]:
            _link(path, root / "cells" / "train" / cls / path.name)
    first = sorted((root / "cells" / "train" / "basophil").iterdir())[0]
    shutil.copy(first, root / "cells" / "train" / "basophil" / "BA_copy_of_first.jpg")  # an exact duplicate
    (root / "cells" / "train" / "lymphocyte").mkdir()  # not a class of ours: reported, not read
    with (data_dir / "jhu-cellavision" / "manifest.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    chosen: list[dict[str, str]] = []
    for cls in CLASSES:
        chosen += [r for r in rows if r["class"] == cls][:per_class]
    for row in chosen:
        _link(data_dir / "jhu-cellavision" / row["file"], root / "jhu" / row["file"])
    with (root / "jhu" / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    for path in sorted((data_dir / "probe-pbc-neutrophil" / "seg_neutrophil").glob("*.jpg"))[:PROBE]:
        _link(path, root / "probe" / "seg_neutrophil" / path.name)
    spec = root / "spec.yaml"
    spec.write_text(
        "data_dir: .\n"
        "datasets:\n"
        "  - name: cells\n"
        "    root: cells\n"
        "    sites: {BA_: barcelona, ERB_: barcelona, MO_: barcelona, MYO_: munich, NGS_: munich}\n"
        "  - {name: jhu, root: jhu, groups: patient, site: johns-hopkins}\n"
        "  - {name: probe, root: probe, site: barcelona, role: evaluation}\n"
    )
    return spec


@pytest.fixture(scope="session")
def three_labs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec of a small three-laboratory dataset (10 images per class and site, 6 probe images)."""
    return make_three_labs(data_dir, tmp_path_factory.mktemp("three-labs"))
