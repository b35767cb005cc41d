"""The dataset audit on the real bloodcells-5class data: duplicates across splits and the source shortcut."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hemascope.commands.audit import run_audit
from hemascope.datasets import CLASSES
from hemascope.training.audit import AuditReport, audit_dataset

# Byte-identical pairs that straddle train and val in the published data.
STRADDLING = [
    ["train/basophil/BA_225540.jpg", "val/basophil/BA_786369.jpg"],
    ["train/monocyte/MO_997225.jpg", "val/monocyte/MO_145357.jpg"],
]


@pytest.fixture(scope="module")
def report(data_dir: Path) -> AuditReport:
    return audit_dataset(data_dir / "bloodcells-5class")


def test_counts_and_sizes(report: AuditReport) -> None:
    assert report.counts == {(s, c): n for s, n in (("train", 600), ("val", 200)) for c in CLASSES}
    assert report.unknown_folders == []
    assert report.skipped_files == []
    assert report.duplicates.unreadable == []
    for name in ("myeloblast", "seg_neutrophil"):
        assert set(report.sizes[name]) == {(400, 400)}
    for name in ("basophil", "erythroblast", "monocyte"):
        assert report.sizes[name].most_common(1)[0][0] == (360, 363)


def test_duplicates(report: AuditReport) -> None:
    dup = report.duplicates
    assert len(dup.exact_groups) >= 5
    exact_names = [[report.name(i) for i in g] for g in dup.exact_groups]
    for pair in STRADDLING:
        assert pair in exact_names
    straddling = [[report.name(i) for i in g] for g in report.straddling]
    assert all(pair in straddling for pair in STRADDLING)
    near = {(report.name(i), report.name(j)) for i, j, _ in dup.near_pairs}
    assert ("val/monocyte/MO_231316.jpg", "val/monocyte/MO_415531.jpg") in near
    # The threshold must not chain distinct cells of a class together.
    assert len(dup.near_pairs) < 20
    assert dup.largest_component <= 4
    assert report.label_conflicts == []


def test_source_shortcut_is_found(report: AuditReport) -> None:
    probe = report.shortcut
    assert probe is not None
    main = probe.results[0]
    assert main.chance == pytest.approx(0.2)
    assert main.accuracy_mean > 0.6
    assert probe.warning
    assert probe.source_groups == [
        ("360x363", ["basophil", "erythroblast", "monocyte"]),
        ("400x400", ["myeloblast", "seg_neutrophil"]),
    ]
    assert probe.source is not None
    assert probe.source.accuracy_mean > 0.9  # border colour alone gives the scanner away
    markdown = report.to_markdown()
    assert "**WARNING: source shortcut." in markdown
    data = json.loads(json.dumps(report.to_json()))
    assert data["shortcut"]["warning"] is True
    assert data["shortcut"]["accuracy_mean"] > 0.6


def test_run_audit_json_on_real_files(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command on a small copy of real files: 8 per class and split, plus the straddling copies."""
    source = data_dir / "bloodcells-5class"
    root = tmp_path / "subset"
    wanted = {Path(name) for pair in STRADDLING for name in pair}
    for split in ("train", "val"):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            wanted |= {p.relative_to(source) for p in sorted((source / split / name).glob("*.jpg"))[:8]}
    for rel in wanted:
        target = root / rel
        try:
            os.symlink(source / rel, target)
        except OSError:
            shutil.copyfile(source / rel, target)
    out = tmp_path / "audit.json"
    assert run_audit(root, as_json=True, out=out) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == data
    assert data["images"] == len(wanted)
    assert sorted(data["duplicates"]["straddling_splits"]) == STRADDLING
    assert data["shortcut"]["chance"] == pytest.approx(18 / len(wanted))  # basophil: 16 + 2 copies
    assert data["shortcut"]["source"]["accuracy_mean"] > 0.9
