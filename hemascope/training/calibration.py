"""Calibration and abstention: expected calibration error, temperature scaling, a coverage-targeted
abstain threshold and the risk-coverage numbers behind it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from hemascope.bundle import apply_temperature

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def reliability(y: IntArray, proba: FloatArray, bins: int = 15) -> dict[str, Any]:
    """Confidence histogram: per equal-width bin the mean confidence, accuracy and count; plus the ECE."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf, acc, count = [], [], []
    ece = 0.0
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        count.append(n)
        conf.append(float(confidence[mask].mean()) if n else None)
        acc.append(float(correct[mask].mean()) if n else None)
        if n:
            ece += n / len(y) * abs(float(confidence[mask].mean()) - float(correct[mask].mean()))
    return {"ece": ece, "edges": edges.tolist(), "confidence": conf, "accuracy": acc, "count": count}


def fit_temperature(y: IntArray, proba: FloatArray) -> float:
    """The temperature minimising the negative log-likelihood on a calibration split."""

    def nll(log_t: float) -> float:
        p = apply_temperature(proba, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def abstain_threshold(proba: FloatArray, target_coverage: float) -> float:
    """Confidence threshold that keeps ``target_coverage`` of the cases (the rest are referred)."""
    confidence = np.sort(proba.max(axis=1))
    cut = int(np.floor((1 - target_coverage) * len(confidence)))
    return float(confidence[min(cut, len(confidence) - 1)]) if cut > 0 else 0.0


def risk_coverage(
    y: IntArray, proba: FloatArray, threshold: float, levels: tuple[float, ...] = (1.0, 0.98, 0.95, 0.9, 0.8)
) -> dict[str, Any]:
    """Coverage and error rate on the kept cases at ``threshold``, and the risk at fixed coverage levels."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    kept = confidence >= threshold
    order = np.argsort(-confidence, kind="stable")
    curve = []
    for level in levels:
        k = max(1, round(level * len(y)))
        curve.append({"coverage": level, "risk": float(1 - correct[order[:k]].mean())})
    return {
        "threshold": threshold,
        "coverage": float(kept.mean()),
        "risk": float(1 - correct[kept].mean()) if kept.any() else None,
        "referred": int((~kept).sum()),
        "curve": curve,
    }
