"""``hemascope site validate`` end to end on real cells of a third laboratory (Johns Hopkins, grouped by
patient) against the committed bundle, whatever backbone and scores that bundle has."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hemascope.data import REPO_ROOT

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
PER_CLASS = 10

# Hold for any bundle on any data of 10 cells per class: every figure lies in [0, 1].
MUST_PASS = """\
models: all
criteria:
  - {metric: cells_per_class, min: 10}
  - {metric: myeloblast_sensitivity, bound: lower, min: 0.0}
  - {metric: class_sensitivity, bound: upper, min: 0.0}
  - {metric: referral_rate, max: 1.0}
  - {metric: ece, max: 1.0}
"""
# Cannot hold: 1000 cells per class, and a lower 95% bound of 1 (reached by no finite count).
MUST_FAIL = """\
criteria:
  - {metric: cells_per_class, min: 1000}
  - {metric: myeloblast_sensitivity, bound: lower, min: 1.0}
"""


@pytest.fixture(scope="module")
def lab(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 cells per class from jhu-cellavision (symlinks) with their manifest rows (patients)."""
    source = data_dir / "jhu-cellavision"
    root = tmp_path_factory.mktemp("site") / "lab"
    with (source / "manifest.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    chosen = [row for cls in CLASSES for row in [r for r in rows if r["class"] == cls][:PER_CLASS]]
    for row in chosen:
        target = root / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source / row["file"])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return root


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hemascope", "site", "validate", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT, check=False
    )


def _estimates(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        if {"value", "low", "high"} <= set(tree):
            yield tree
        for value in tree.values():
            yield from _estimates(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _estimates(value)


@pytest.mark.slow
def test_site_validate_end_to_end(lab: Path, tmp_path: Path) -> None:
    (tmp_path / "pass.yaml").write_text(MUST_PASS)
    (tmp_path / "fail.yaml").write_text(MUST_FAIL)
    common = ("--bundle", BUNDLE, "--data", f"lab={lab}", "--replicates", "200")

    passed = _run(*common, "--criteria", tmp_path / "pass.yaml", "--out", tmp_path / "pass", "--json")
    assert passed.returncode == 0, passed.stderr
    line = json.loads(passed.stdout.strip().splitlines()[-1])
    assert line["passed"] is True and line["grouped_by_patient"] is True
    assert "Traceback" not in passed.stderr

    out = tmp_path / "pass"
    for name in ("report.md", "validation.json", "reliability.png", "sensitivity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "**Verdict: PASSED**" in report and "resamples whole patients" in report
    for link in [part.split(")")[0] for part in report.split("](")[1:]]:
        assert (out / link).is_file(), link

    result = json.loads((out / "validation.json").read_text())
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    assert result["bundle"]["backbone"] == manifest["backbone"]
    assert set(result["models"]) == set(manifest["models"])
    assert result["data"]["counts"] == dict.fromkeys(CLASSES, PER_CLASS)
    assert result["intervals"]["grouped_by_patient"] and result["data"]["patients"] >= 2
    estimates = list(_estimates(result["models"]))
    assert len(estimates) >= len(manifest["models"]) * (2 * len(CLASSES) + 3)
    for node in estimates:
        if node["value"] is not None:
            assert node["low"] <= node["value"] <= node["high"], node
            assert node["low"] >= 0 and node["high"] <= 1, node
    for name, model in result["models"].items():
        assert 0 <= model["calibration"]["ece"] <= 1, name
        assert model["myeloblast"]["sensitivity"]["n"] == PER_CLASS
        assert model["myeloblast"]["threshold_for_target"]["sensitivity"] >= 0.95
        assert model["answered"]["n"] <= model["all"]["n"] == PER_CLASS * len(CLASSES)
    assert all(v["passed"] for v in result["criteria"]["verdicts"])

    failed = _run(*common, "--criteria", tmp_path / "fail.yaml", "--out", tmp_path / "fail")
    assert failed.returncode == 1, failed.stderr
    assert "verdict: FAILED" in failed.stdout and "FAIL" in failed.stdout
    judged = json.loads((tmp_path / "fail" / "validation.json").read_text())
    assert judged["passed"] is False
    assert {v["metric"] for v in judged["criteria"]["verdicts"] if not v["passed"]} == {
        "cells_per_class",
        "myeloblast_sensitivity",
    }


def test_usage_errors_are_one_line_and_exit_2(lab: Path, tmp_path: Path) -> None:
    """Mistakes are found before anything is embedded: one line, exit 2, no traceback."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("criteria:\n  - {metric: myeloblast_sensitivity, bound: lower}\n")
    stray = tmp_path / "stray"
    (stray / "myeloblast").mkdir(parents=True)
    (stray / "myeloblast" / "a.jpg").symlink_to(next((lab / "myeloblast").iterdir()).resolve())
    (stray / "lymphocyte").mkdir()
    out = tmp_path / "out"
    cases = [
        (("--data", str(lab), "--criteria", str(bad_yaml)), "exactly one of 'min' or 'max'"),
        (("--data", str(lab), "--criteria", str(tmp_path / "none.yaml")), "cannot read criteria file"),
        (("--data", str(tmp_path / "nowhere")), "folder not found"),
        (("--data", str(stray)), "not classes of the bundle"),
    ]
    for args, message in cases:
        done = _run("--bundle", BUNDLE, *args, "--out", out)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
