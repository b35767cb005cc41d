"""The pieces a site profile refits, each a small closed-form or one-optimiser fit on labelled cells.

- :func:`balanced_stats`: the site's class-balanced mean and spread of the bundle-scaled embeddings (so the
  class mix of the labelled sample does not move them), the spread shrunk towards the training spread (1);
- :func:`adapter_arrays`: the affine map of an adapter kind from those statistics;
- :func:`fit_calibration`: a temperature, and optionally a per-class bias with an L2 penalty (bias-corrected
  temperature scaling), minimising the negative log-likelihood of the true classes;
- :func:`myeloblast_boost`: the smallest raise of the myeloblast logit that makes at least a given number of
  myeloblasts be called myeloblast.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from sklearn.metrics import f1_score

from hemascope.bundle import softmax
from hemascope.site.profile import AdapterKind

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: the spread of every feature is shrunk towards the training spread as if this many cells had shown it
SPREAD_PRIOR_CELLS = 20.0
#: L2 penalty on the class biases (per cell), so a few cells cannot push a bias far
BIAS_PENALTY = 0.05


def balanced_stats(scaled: FloatArray, y: IntArray) -> tuple[FloatArray, FloatArray]:
    """Per-feature mean and standard deviation of the classes present, each class weighted equally."""
    present = np.unique(y)
    means = np.stack([scaled[y == c].mean(axis=0) for c in present])
    second = np.stack([(scaled[y == c] ** 2).mean(axis=0) for c in present])
    mean = means.mean(axis=0)
    variance = np.maximum(second.mean(axis=0) - mean**2, 1e-6)
    n = float(len(y))
    shrunk = (n * variance + SPREAD_PRIOR_CELLS * 1.0) / (n + SPREAD_PRIOR_CELLS)
    return mean, np.sqrt(shrunk)


def adapter_arrays(kind: AdapterKind, mean: FloatArray, std: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(scale, offset)`` with ``scaled' = scaled * scale + offset``."""
    if kind == "shift":
        return np.ones_like(mean), -mean
    if kind == "standardise":
        return 1.0 / std, -mean / std
    return np.ones_like(mean), np.zeros_like(mean)


def log_proba(probs: FloatArray) -> FloatArray:
    out: FloatArray = np.log(np.clip(probs, 1e-12, 1.0))
    return out


def nll(logits: FloatArray, y: IntArray) -> float:
    p = softmax(logits)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_calibration(logp: FloatArray, y: IntArray, *, bias: bool) -> tuple[float, FloatArray]:
    """``(temperature, bias)`` minimising the NLL of ``softmax(logp / T + b)`` (plus ``BIAS_PENALTY *
    |b|^2``); with ``bias=False`` only the temperature is fitted and ``b`` is zero."""
    k = logp.shape[1]
    onehot = np.eye(k)[y]

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        log_t, b = theta[0], theta[1:] if bias else np.zeros(k)
        inv_t = np.exp(-log_t)
        logits = logp * inv_t + b
        p = softmax(logits)
        true = logits[np.arange(len(y)), y]
        lse = np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)) + logits.max(axis=1)
        loss = float(np.mean(lse - true) + BIAS_PENALTY * np.sum(b**2))
        residual = (p - onehot) / len(y)
        grad_log_t = float(-np.sum(residual * logp) * inv_t)
        grads = [grad_log_t]
        if bias:
            grads += list(residual.sum(axis=0) + 2 * BIAS_PENALTY * b)
        return loss, np.asarray(grads)

    start = np.zeros(1 + (k if bias else 0))
    bounds = [(np.log(0.05), np.log(20.0))] + [(-10.0, 10.0)] * (k if bias else 0)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    theta = np.asarray(result.x, dtype=np.float64)
    return float(np.exp(theta[0])), (theta[1:].copy() if bias else np.zeros(k))


def calibrated_logits(logp: FloatArray, temperature: float, b: FloatArray) -> FloatArray:
    out: FloatArray = logp / temperature + b
    return out


def sensitivity(pred: IntArray, y: IntArray, cls: int) -> float | None:
    mask = y == cls
    return float((pred[mask] == cls).mean()) if mask.any() else None


def macro_f1(pred: IntArray, y: IntArray, n_classes: int) -> float:
    present = sorted({int(c) for c in y})
    del n_classes
    return float(f1_score(y, pred, labels=present, average="macro", zero_division=0))


def myeloblast_boost(logits: FloatArray, y: IntArray, cls: int, needed: int) -> float:
    """The smallest ``delta >= 0`` such that adding it to column ``cls`` makes at least ``needed`` cells of
    class ``cls`` be predicted ``cls`` (0 when they already are, or when ``needed`` is 0)."""
    rows = logits[y == cls]
    if needed <= 0 or not len(rows):
        return 0.0
    others = np.delete(rows, cls, axis=1).max(axis=1)
    gaps = np.sort(np.maximum(others - rows[:, cls], 0.0))
    gap = float(gaps[min(needed, len(gaps)) - 1])
    return 0.0 if gap <= 0 else gap * (1 + 1e-6) + 1e-9


def candidate_summary(pred: IntArray, y: IntArray, logits: FloatArray, cls: int) -> dict[str, Any]:
    return {
        "macro_f1": macro_f1(pred, y, logits.shape[1]),
        "accuracy": float((pred == y).mean()),
        "myeloblast_sensitivity": sensitivity(pred, y, cls),
        "nll": nll(logits, y),
    }
