"""What ``hemascope evaluate`` prints around its figures (the figures themselves: tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from hemascope.commands.train import _print_table

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


def result(supports: dict[str, int]) -> dict[str, Any]:
    per_class = {cls: {"support": supports.get(cls, 0)} for cls in CLASSES}
    metrics = {
        "accuracy": 0.9,
        "macro_f1": 0.18,
        "roc_auc": None,
        "malignant": {"sensitivity": None, "specificity": 0.99},
        "abstain": {"coverage": 0.95},
        "referral": {"coverage": 0.9},
        "per_class": per_class,
    }
    data = {"root": "probe", "images": sum(supports.values()), "unknown_folders": [], "trained_on": []}
    return {"bundle": {"version": "v1"}, "data": data, "models": {"logistic_regression": metrics}}


def test_a_one_class_folder_shows_no_macro_f1_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    _print_table(result({"seg_neutrophil": 1}))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("logistic_regression"))
    assert "0.180" not in row and "n/a" in row
    assert "no images of basophil, erythroblast, monocyte, myeloblast" in out
    assert "1 image" in out and "1 images" not in out
    assert "coverage: share of cells answered" in out and "cov.ref:" in out


def test_every_class_present_shows_macro_f1(capsys: pytest.CaptureFixture[str]) -> None:
    _print_table(result(dict.fromkeys(CLASSES, 4)))
    out = capsys.readouterr().out
    assert "0.180" in out
    assert "no images of" not in out
    assert "20 images" in out
