"""The site study compares candidate pipelines by leave-one-source-out and chooses by a fixed rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hemascope.errors import InvalidArgument, NotFound
from hemascope.training.sitestudy import choose, parse_candidate, summarise


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)


def _fold(f1: float, sens: float | None, fpr: float) -> dict[str, object]:
    m = {"macro_f1": f1, "myeloblast_sensitivity": sens, "myeloblast_fpr": fpr, "ece": 0.05}
    return {"models": {"logistic_regression": m}}


def test_summary_and_rule() -> None:
    a = summarise({"x": _fold(0.8, None, 0.01), "y": _fold(0.6, 0.7, 0.05)})
    assert a["mean_macro_f1"] == pytest.approx(0.7) and a["worst_macro_f1"] == pytest.approx(0.6)
    assert a["mean_myeloblast_sensitivity"] == pytest.approx(0.7) and a["worst_false_blast_rate"] == 0.05
    b = summarise({"x": _fold(0.7, None, 0.0), "y": _fold(0.7, 0.9, 0.0)})
    c = summarise({"x": _fold(0.7, None, 0.0), "y": _fold(0.7, 0.8, 0.0)})
    assert choose({"a": a, "b": b, "c": c}) == "b"  # equal mean F1: higher blast sensitivity wins


def test_candidates_are_checked() -> None:
    assert parse_candidate("finetuned:cellcrop-hematoxylin") == ("finetuned", "cellcrop-hematoxylin")
    with pytest.raises(InvalidArgument, match="expected frozen"):
        parse_candidate("imagenet:plain")
    with pytest.raises(NotFound, match="unknown preprocessing"):
        parse_candidate("frozen:fancy")


def test_study_cli_scores_frozen_candidates_and_writes_its_table(three_labs: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hemascope", "study", "sites", "--sources", str(three_labs)]
    options = ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    candidates = ["--candidates", "frozen:plain,frozen:cellcrop-hematoxylin"]
    done = _run([*command, *options, *candidates])
    assert done.returncode == 0, done.stderr
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert set(study["results"]) == {"frozen:plain", "frozen:cellcrop-hematoxylin"}
    assert set(study["results"]["frozen:plain"]) == {"barcelona", "munich", "johns-hopkins"}
    assert study["chosen"] in study["results"] and f"chosen: {study['chosen']}" in done.stdout
    markdown = (tmp_path / "out" / "study.md").read_text()
    assert "## Summary" in markdown and "(chosen)" in markdown and "## Every fold" in markdown
    bad = _run([*command, *options, "--candidates", "frozen:fancy"])
    assert bad.returncode == 2 and "unknown preprocessing" in bad.stderr and "Traceback" not in bad.stderr
