"""``hemascope study site-shift`` on a small three-laboratory set: every fold, every table, and the Munich
scanner (another image size and white balance) told apart from the two CellaVision laboratories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.multisite_fixtures import make_three_labs


def test_site_shift_study_scores_every_fold(data_dir: Path, tmp_path: Path) -> None:
    # enough cells per class that every class has patients on both sides of every fold's split
    three_labs = make_three_labs(data_dir, tmp_path / "labs", per_class=30)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hemascope", "study", "site-shift", "--sources", str(three_labs)]
    options = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--streams", "3"]
    done = subprocess.run([*command, *options], check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    study = json.loads((out / "study.json").read_text())
    folds = {fold["held_out"]: fold for fold in study["folds"]}
    assert set(folds) == {"barcelona", "munich", "johns-hopkins"}
    for fold in folds.values():
        assert set(fold["auroc"]) == {"acquisition", "acquisition (true class)", "embedding", "combined"}
        assert all(value is None or 0 <= value <= 1 for value in fold["auroc"].values())
        assert fold["drift"]["streams"] == 3
        assert set(fold["drift"]["training_site_streams_flagged"]) == set(folds) - {fold["held_out"]}
        for rule in fold["referral"].values():
            assert 0 <= rule["answered"] <= 1
    assert folds["munich"]["auroc"]["acquisition (true class)"] >= 0.9
    text = (out / "study.md").read_text()
    assert "## Targets" in text and "## The drift monitor replayed" in text
