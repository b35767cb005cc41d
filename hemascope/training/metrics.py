"""Evaluation metrics for the classical models (scikit-learn metrics wherever one exists).

All functions take class indices ``y`` (bundle class order) and probabilities ``proba`` (N x C) and return
plain JSON-able dicts, so results can be written, compared and rendered without the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    confusion_matrix,
    normalized_mutual_info_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def specificities(cm: NDArray[np.int64]) -> FloatArray:
    """Per-class specificity TN / (TN + FP) from a confusion matrix (rows: truth, columns: prediction)."""
    total = cm.sum()
    fp = cm.sum(axis=0) - np.diag(cm)
    fn = cm.sum(axis=1) - np.diag(cm)
    tn = total - fp - fn - np.diag(cm)
    out: FloatArray = tn / np.maximum(tn + fp, 1)
    return out


def _roc_auc(y: IntArray, proba: FloatArray, n_classes: int) -> float | None:
    present = np.unique(y)
    if len(present) < 2:
        return None
    if len(present) < n_classes:  # macro over the classes present, one-vs-rest
        return float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def malignancy(y: IntArray, proba: FloatArray, malignant: Sequence[int]) -> dict[str, float | None]:
    """Malignant (e.g. myeloblast) vs the rest: sensitivity and specificity of the argmax label, ROC-AUC."""
    truth = np.isin(y, malignant)
    predicted = np.isin(proba.argmax(axis=1), malignant)
    score = proba[:, list(malignant)].sum(axis=1)
    tp = int((truth & predicted).sum())
    tn = int((~truth & ~predicted).sum())
    return {
        "sensitivity": tp / truth.sum() if truth.any() else None,
        "specificity": tn / (~truth).sum() if (~truth).any() else None,
        "roc_auc": float(roc_auc_score(truth, score)) if truth.any() and (~truth).any() else None,
    }


def classification_metrics(
    y: IntArray, proba: FloatArray, classes: Sequence[str], malignant: Sequence[int]
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1/specificity, OvR ROC-AUC, confusion matrix, per-class report."""
    n = len(classes)
    pred = proba.argmax(axis=1)
    labels = list(range(n))
    cm = confusion_matrix(y, pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    spec = specificities(cm)
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "macro_specificity": float(np.mean(spec)),
        "roc_auc": _roc_auc(y, proba, n),
        "confusion_matrix": cm.tolist(),
        "per_class": {
            cls: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "specificity": float(spec[i]),
                "support": int(support[i]),
            }
            for i, cls in enumerate(classes)
        },
        "malignant": malignancy(y, proba, malignant),
    }


def clustering_metrics(y: IntArray, clusters: IntArray) -> dict[str, float]:
    return {
        "ari": float(adjusted_rand_score(y, clusters)),
        "nmi": float(normalized_mutual_info_score(y, clusters)),
    }


def roc_curves(y: IntArray, proba: FloatArray, classes: Sequence[str], points: int = 101) -> dict[str, Any]:
    """One-vs-rest ROC curve per class, resampled on a fixed FPR grid (small enough to store in JSON)."""
    grid = np.linspace(0, 1, points)
    curves: dict[str, Any] = {"fpr": grid.tolist()}
    for i, cls in enumerate(classes):
        if (y == i).any() and (y != i).any():
            fpr, tpr, _ = roc_curve(y == i, proba[:, i])
            curves[cls] = np.interp(grid, fpr, tpr).tolist()
    return curves


SCALAR_METRICS = (
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "macro_specificity",
    "roc_auc",
)


def summarise_folds(folds: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every scalar metric (and malignancy metric) over CV folds."""
    out: dict[str, dict[str, float]] = {}
    keys = [
        *SCALAR_METRICS,
        "malignant_sensitivity",
        "malignant_specificity",
        "malignant_roc_auc",
        "ari",
        "nmi",
    ]
    for key in keys:
        values = []
        for fold in folds:
            value = (
                fold["malignant"].get(key.removeprefix("malignant_"))
                if key.startswith("malignant_")
                else fold.get(key)
            )
            if value is not None:
                values.append(float(value))
        if values:
            out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return out
