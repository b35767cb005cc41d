"""Metrics of one site's cells: what a laboratory would see if it used the models as they are.

Macro figures are over the classes the site has (a site with two classes is not scored on five); the
myeloblast view is the argmax rule the services apply (sensitivity among its myeloblasts, specificity and
false-positive rate among its other cells) plus the malignant ROC-AUC and, as an upper bound a site could
reach by choosing its own threshold (``hemascope site validate``), the sensitivity at 95% specificity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from hemascope.training.calibration import reliability

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _sens_at_spec(truth: BoolArray, score: FloatArray, specificity: float) -> float | None:
    if not truth.any() or truth.all():
        return None
    fpr, tpr, _ = roc_curve(truth, score)
    ok = fpr <= 1 - specificity + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def site_metrics(
    y: IntArray,
    proba: FloatArray,
    classes: Sequence[str],
    malignant: Sequence[int],
    referred: BoolArray | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1 over present classes, per-class recall, the myeloblast view, ECE, referral."""
    pred = proba.argmax(axis=1)
    present = sorted({int(v) for v in y})
    truth = np.isin(y, malignant)
    called = np.isin(pred, malignant)
    score = proba[:, list(malignant)].sum(axis=1)
    out: dict[str, Any] = {
        "n": len(y),
        "classes": [classes[c] for c in present],
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "recall": {classes[c]: float((pred[y == c] == c).mean()) for c in present},
        "called": {
            classes[c]: {classes[k]: int(((y == c) & (pred == k)).sum()) for k in range(len(classes))}
            for c in present
        },
        "myeloblast_sensitivity": float(called[truth].mean()) if truth.any() else None,
        "myeloblast_specificity": float((~called[~truth]).mean()) if (~truth).any() else None,
        "myeloblast_fpr": float(called[~truth].mean()) if (~truth).any() else None,
        "malignant_auc": float(roc_auc_score(truth, score)) if truth.any() and (~truth).any() else None,
        "sensitivity_at_95_specificity": _sens_at_spec(truth, score, 0.95),
        "ece": reliability(y, proba)["ece"],
    }
    if referred is not None:
        correct = pred == y
        out["referred"] = float(referred.mean())
        out["errors_referred"] = float(referred[~correct].mean()) if (~correct).any() else None
        out["answered_accuracy"] = float(correct[~referred].mean()) if (~referred).any() else None
    return out


def per_site(
    y: IntArray,
    proba: FloatArray,
    sites: Sequence[str],
    classes: Sequence[str],
    malignant: Sequence[int],
    referred: BoolArray | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`site_metrics` for every site among ``sites`` (aligned with ``y``)."""
    site_array = np.asarray(sites)
    return {
        site: site_metrics(
            y[mask], proba[mask], classes, malignant, None if referred is None else referred[mask]
        )
        for site in dict.fromkeys(sites)
        for mask in [site_array == site]
    }
