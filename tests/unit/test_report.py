"""The training report renders from a results dict built with the real metric functions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hemascope.training.calibration import reliability, risk_coverage
from hemascope.training.metrics import (
    classification_metrics,
    clustering_metrics,
    roc_curves,
    summarise_folds,
)
from hemascope.training.report import render_report

CLASSES = ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"]
MALIGNANT = [CLASSES.index("myeloblast")]


def _proba(rng: np.random.Generator, y: np.ndarray, skill: float) -> np.ndarray:
    logits = rng.normal(size=(len(y), len(CLASSES)))
    logits[np.arange(len(y)), y] += skill
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _model(rng: np.random.Generator, skill: float, kmeans: bool = False) -> dict[str, Any]:
    y = rng.integers(0, len(CLASSES), size=300).astype(np.int64)
    raw = _proba(rng, y, skill)
    calibrated = raw**1.3 / (raw**1.3).sum(axis=1, keepdims=True)
    test = classification_metrics(y, calibrated, CLASSES, MALIGNANT)
    folds = []
    for _ in range(3):
        y_fold = rng.integers(0, len(CLASSES), size=100).astype(np.int64)
        p_fold = _proba(rng, y_fold, skill)
        fold = classification_metrics(y_fold, p_fold, CLASSES, MALIGNANT)
        if kmeans:
            fold.update(clustering_metrics(y_fold, p_fold.argmax(axis=1).astype(np.int64)))
        folds.append(fold)
    if kmeans:
        test.update(clustering_metrics(y, calibrated.argmax(axis=1).astype(np.int64)))
    confidence = np.sort(calibrated.max(axis=1))
    threshold = float(confidence[int(0.05 * len(y))])
    result: dict[str, Any] = {
        "description": "synthetic",
        "fit_seconds": 1.5,
        "cv_seconds": 7.25,
        "cv": summarise_folds(folds),
        "test": test,
        "calibration": {
            "method": "temperature",
            "temperature": 1.3,
            "before": reliability(y, raw),
            "after": reliability(y, calibrated),
        },
        "abstain": {"target_coverage": 0.95, **risk_coverage(y, calibrated, threshold)},
        "roc": roc_curves(y, calibrated, CLASSES),
    }
    return result


@pytest.fixture
def results() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    xgb = _model(rng, 4.0)
    xgb["feature_importance"] = [
        {"feature": int(i), "gain": float(g)} for i, g in enumerate(np.sort(rng.random(20))[::-1] / 10)
    ]
    return {
        "models": {"logistic_regression": _model(rng, 5.0), "xgboost": xgb, "kmeans": _model(rng, 1.0, True)},
        "created": "2025-01-01T00:00:00+00:00",
        "command": "hemascope train classifiers --data X",
        "dataset": {
            "root": "/data/bloodcells-5class",
            "images": 4000,
            "counts": {f"{s}/{c}": n for s, n in (("train", 600), ("val", 200)) for c in CLASSES},
            "unknown_folders": [],
            "fingerprint": "ab" * 32,
        },
        "duplicates": {"exact_groups": 3, "near_pairs": 5, "merged_groups": 7, "images_in_merged_groups": 15},
        "split": {
            "seed": 50,
            "train": 3200,
            "test": 800,
            "fit": 2720,
            "calib": 480,
            "cv_folds": 3,
            "grouped": True,
        },
        "embedding": {
            "backbone": "efficientnet_lite0",
            "weights_hash": "f" * 64,
            "preprocessing": "v1",
            "dimension": 1280,
            "seconds": 1.0,
            "cache_hits": 0,
        },
        "classes": CLASSES,
        "malignant_classes": ["myeloblast"],
        "bundle": {"path": "/tmp/bundle", "version": "v1"},
    }


def _assert_valid_pngs(md: str, folder: Path) -> list[str]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    for link in links:
        assert not Path(link).is_absolute()
        with Image.open(folder / link) as image:
            assert image.format == "PNG"
            image.verify()
    return links


def test_report_has_tables_and_valid_figures(results: dict[str, Any], tmp_path: Path) -> None:
    audit = {"shortcut": {"accuracy_mean": 0.41, "accuracy_std": 0.02, "chance": 0.2}}
    path = render_report(results, tmp_path / "out", audit)
    assert path == tmp_path / "out" / "report.md"
    md = path.read_text(encoding="utf-8")
    for heading in (
        "## Read this first",
        "## Table I",
        "## Held-out metrics",
        "## Cross-validation",
        "## Per-class report",
        "## Figures",
        "## Targets",
    ):
        assert heading in md
    assert "| model | accuracy | precision | recall | F1 | study accuracy" in md
    assert "0.06[^a]" in md  # the study's k-means accuracy, the only study number we have
    assert "Acevedo" in md and "Matek" in md
    assert "0.410 ± 0.020** against chance 0.200" in md
    assert "7 groups (15 images)" in md
    assert "| seg neutrophil |" in md
    assert " ± " in md.split("## Cross-validation")[1]
    assert "not met" in md or "| met |" in md
    links = _assert_valid_pngs(md, path.parent)
    assert set(links) == {
        "confusion_matrices.png",
        "roc_curves.png",
        "reliability.png",
        "risk_coverage.png",
        "xgboost_feature_importance.png",
    }


def test_report_without_audit_or_xgboost(results: dict[str, Any], tmp_path: Path) -> None:
    del results["models"]["xgboost"]
    results["models"]["logistic_regression"]["test"]["macro_f1"] = 0.9
    results["models"]["kmeans"]["cv"] = {}
    md = render_report(results, tmp_path).read_text(encoding="utf-8")
    assert "Shortcut audit: not run" in md
    assert "xgboost_feature_importance.png" not in md
    assert len(_assert_valid_pngs(md, tmp_path)) == 4
    md = render_report(results, tmp_path, audit={"something_else": 1}).read_text(encoding="utf-8")
    assert "holds no shortcut-probe accuracy" in md
    assert "audit something_else: 1" in md
    assert "| LR macro-F1 ≥ 0.97 | Logistic regression | 0.900 | **not met** |" in md
