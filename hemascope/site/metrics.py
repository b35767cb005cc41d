"""What a laboratory measures of one model on its own labelled cells, each figure with its 95% interval.

Per class: sensitivity (the class's cells called that class) and specificity (the other cells not called
it). The malignant call (myeloblast) as the classifier makes it, by its label (argmax), with the ROC-AUC of
the malignant probability and the threshold that would reach a target sensitivity. Calibration (ECE and the
reliability bins). Referral as the classifier service flags it (low confidence or out of distribution), and
accuracy and macro-F1 on every cell and on the answered (not referred) cells only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from hemascope.site.stats import (
    BoolArray,
    FloatArray,
    IntArray,
    Resampler,
    bootstrap,
    proportion,
    threshold_for_sensitivity,
)
from hemascope.training.calibration import reliability


def _macro_f1(y: IntArray, pred: IntArray, labels: Sequence[int]) -> float | None:
    if not len(y):
        return None
    return float(f1_score(y, pred, labels=list(labels), average="macro", zero_division=0))


def _auc(truth: BoolArray, score: FloatArray, resampler: Resampler) -> dict[str, Any]:
    def statistic(index: IntArray) -> float | None:
        t = truth[index]
        return float(roc_auc_score(t, score[index])) if t.any() and (~t).any() else None

    return bootstrap(statistic, resampler, len(truth)).to_dict()


def model_metrics(
    y: IntArray,
    proba: FloatArray,
    classes: Sequence[str],
    malignant: Sequence[int],
    flags: tuple[BoolArray, BoolArray],
    resampler: Resampler,
    target_sensitivity: float,
) -> dict[str, Any]:
    """Every figure of one model (see the module docstring); ``flags`` are the low-confidence and
    out-of-distribution flags per cell, as the classifier service sets them."""
    low, ood = flags
    pred = proba.argmax(axis=1).astype(np.int64)
    correct = pred == y
    everyone = np.ones(len(y), dtype=np.bool_)
    referred = low | ood
    present = sorted({int(v) for v in y})
    per_class = {
        cls: {
            "n": int((y == c).sum()),
            "sensitivity": proportion(pred == c, y == c, resampler).to_dict(),
            "specificity": proportion(pred != c, y != c, resampler).to_dict(),
        }
        for c, cls in enumerate(classes)
    }
    truth = np.isin(y, malignant)
    called = np.isin(pred, malignant)
    score = proba[:, list(malignant)].sum(axis=1)
    calibration = reliability(y, proba)
    return {
        "n": len(y),
        "per_class": per_class,
        "myeloblast": {
            "classes": [classes[c] for c in malignant],
            "rule": "label (argmax) is a malignant class",
            "sensitivity": proportion(called, truth, resampler).to_dict(),
            "specificity": proportion(~called, ~truth, resampler).to_dict(),
            "auc": _auc(truth, score, resampler),
            "threshold_for_target": threshold_for_sensitivity(truth, score, target_sensitivity),
        },
        "calibration": {"ece": calibration["ece"], "reliability": calibration},
        "referral": {
            "rate": proportion(referred, everyone, resampler).to_dict(),
            "low_confidence": float(low.mean()) if len(y) else None,
            "out_of_distribution": float(ood.mean()) if len(y) else None,
            "errors_referred": proportion(referred, ~correct, resampler).to_dict(),
        },
        "all": {
            "n": len(y),
            "accuracy": proportion(correct, everyone, resampler).to_dict(),
            "macro_f1": _macro_f1(y, pred, present),
        },
        "answered": {
            "n": int((~referred).sum()),
            "accuracy": proportion(correct, ~referred, resampler).to_dict(),
            "macro_f1": _macro_f1(y[~referred], pred[~referred], present),
        },
    }
