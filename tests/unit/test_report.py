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
from hemascope.training.sitemetrics import per_site, site_metrics

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
    models = {"logistic_regression": _model(rng, 5.0), "xgboost": xgb, "kmeans": _model(rng, 1.0, True)}
    sites = {"barcelona": [0, 1, 2], "munich": [3, 4], "johns-hopkins": [0, 1, 2, 3, 4]}
    folds = {}
    for site, classes in sites.items():
        y = rng.choice(classes, size=120).astype(np.int64)
        folds[site] = {
            "n_fit": 3000,
            "n_calib": 300,
            "n_test": len(y),
            "embed_seconds": 0.1,
            "models": {"logistic_regression": site_metrics(y, _proba(rng, y, 3.0), CLASSES, MALIGNANT)},
        }
    for model in models.values():
        y = rng.integers(0, len(CLASSES), size=90).astype(np.int64)
        names = ["barcelona", "munich", "johns-hopkins"] * 30
        model["referral"] = {"test_per_site": per_site(y, _proba(rng, y, 4.0), names, CLASSES, MALIGNANT)}
    return {
        "models": models,
        "loso": {
            "embeddings": "the same frozen embeddings in every fold",
            "models": ["logistic_regression"],
            "folds": folds,
        },
        "created": "2025-01-01T00:00:00+00:00",
        "command": "hemascope train classifiers --data X",
        "dataset": {
            "root": "/data/bloodcells-5class, /data/jhu",
            "sources": [
                {"name": "cells", "role": "train"},
                {"name": "jhu", "role": "train"},
                {"name": "probe", "role": "evaluation"},
            ],
            "training_sites": ["barcelona", "munich", "johns-hopkins"],
            "images": 5178,
            "evaluation_images": 200,
            "patients": 73,
            "counts": {
                "cells:barcelona": {c: 800 for c in CLASSES[:3]},
                "cells:munich": {c: 800 for c in CLASSES[3:]},
                "jhu:johns-hopkins": {c: 200 for c in CLASSES},
                "probe:barcelona": {"seg_neutrophil": 200},
            },
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
    audits = {"cells": {"shortcut": {"accuracy_mean": 0.41, "chance": 0.2}, "full audit": "audit-cells.md"}}
    path = render_report(results, tmp_path / "out", audits)
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
        "## Leave-one-source-out",
        "## Per site: held-out part",
    ):
        assert heading in md
    assert "johns-hopkins held out: macro-F1 ≥ 0.9" in md
    assert "Every class is seen at two sites or more" in md
    assert "monocyte: barcelona, johns-hopkins" in md
    assert "| model | accuracy | precision | recall | F1 | study accuracy" in md
    assert "0.06[^a]" in md  # the study's k-means accuracy, the only study number we have
    assert "Acevedo" in md and "Matek" in md and "Sidhom" in md
    assert "Shortcut audit of cells" in md and "**0.410** against chance 0.200" in md
    assert "(3 exact groups, 5 near-duplicate pairs)" in md
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


def test_report_without_audit_loso_or_xgboost_warns_of_one_site_classes(
    results: dict[str, Any], tmp_path: Path
) -> None:
    del results["models"]["xgboost"]
    del results["loso"]
    results["dataset"]["counts"].pop("jhu:johns-hopkins")
    results["models"]["logistic_regression"]["test"]["macro_f1"] = 0.9
    results["models"]["kmeans"]["cv"] = {}
    md = render_report(results, tmp_path).read_text(encoding="utf-8")
    assert "Shortcut audit" not in md
    assert "come from one site only" in md
    assert "Not run (one training site, or `--no-loso`)" in md
    assert "xgboost_feature_importance.png" not in md
    assert len(_assert_valid_pngs(md, tmp_path)) == 4
    assert "| LR macro-F1 ≥ 0.98 | Logistic regression | 0.900 | **not met** |" in md


def test_probe_section_points_to_the_evaluation_sets_when_they_play_the_probe() -> None:
    from hemascope.training import probe_report

    with_sets = {"models": {"svm": {"referral": {"probe_per_site": {"probe:barcelona": {}}}}}}
    assert "evaluation-only sets (probe:barcelona)" in "\n".join(probe_report.section(with_sets))
    assert "Not evaluated" in "\n".join(probe_report.section({"models": {"svm": {"referral": {}}}}))
