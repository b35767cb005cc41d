"""An RBF-kernel SVC's probabilities for copies of one point that each differ in one feature, fast and exact.

Ablation-CAM asks the model for its probabilities on C copies of the pooled features, copy ``k`` with
feature ``k`` replaced. scikit-learn's ``SVC.predict_proba`` (libsvm) evaluates the kernel of every copy
against every support vector over all C features: ``copies x support vectors x C`` operations, about
1.5 s for 1280 copies on two cores. One changed feature changes each squared distance by one term,

    ||x' - s||^2 = ||x - s||^2 + (v - x_k)(v + x_k - 2 s_k)      (x' = x with x_k replaced by v),

so the distances of every copy come from the point's own distances in ``copies x support vectors``
operations. The rest is libsvm's prediction as written in its ``svm.cpp`` (which scikit-learn ships):
the one-vs-one decision values, Platt's sigmoid per pair (``probA_``, ``probB_``), clipped to
``[1e-7, 1 - 1e-7]``, and the pairwise coupling of Wu, Lin and Weng (2004) with libsvm's iteration,
stopping rule and iteration limit, vectorised over the copies. The result equals ``predict_proba`` to
rounding (tested on the committed bundle's SVM).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.svm import SVC

_MIN_PROB = 1e-7


def supported(estimator: Any) -> bool:
    """True for a fitted ``SVC`` with the RBF kernel and Platt probabilities (dense support vectors)."""
    return (
        isinstance(estimator, SVC)
        and estimator.kernel == "rbf"
        and bool(estimator.probability)
        and hasattr(estimator, "support_vectors_")
        and isinstance(estimator.support_vectors_, np.ndarray)
        and len(estimator.classes_) >= 2
    )


def one_feature_proba(
    svc: SVC, point: NDArray[np.float64], features: NDArray[np.int64], values: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``predict_proba`` of ``len(features)`` copies of ``point`` (1-D), copy ``i`` with feature
    ``features[i]`` set to ``values[i]``; rows are copies, columns ``svc.classes_``."""
    support: NDArray[np.float64] = np.asarray(svc.support_vectors_, dtype=np.float64)
    base = ((support - point) ** 2).sum(axis=1)  # support vectors
    old = point[features][:, None]
    new = np.asarray(values, dtype=np.float64)[:, None]
    distances = base[None, :] + (new - old) * (new + old - 2.0 * support[:, features].T)
    kernel = np.exp(-float(svc._gamma) * distances)  # copies x support vectors
    decision = kernel @ _pair_coefficients(svc) + np.asarray(svc._intercept_, dtype=np.float64)
    pairwise = np.clip(
        _sigmoid(decision * np.asarray(svc._probA) + np.asarray(svc._probB)), _MIN_PROB, 1 - _MIN_PROB
    )
    return _couple(pairwise, len(svc.classes_))


def _pair_coefficients(svc: SVC) -> NDArray[np.float64]:
    """Support vectors x class pairs: the dual coefficients libsvm sums for each pair's decision value."""
    counts = np.asarray(svc.n_support_, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    dual = np.asarray(svc._dual_coef_, dtype=np.float64)
    classes = len(counts)
    out = np.zeros((int(starts[-1]), classes * (classes - 1) // 2))
    pair = 0
    for i in range(classes):
        for j in range(i + 1, classes):
            out[starts[i] : starts[i + 1], pair] = dual[j - 1, starts[i] : starts[i + 1]]
            out[starts[j] : starts[j + 1], pair] = dual[i, starts[j] : starts[j + 1]]
            pair += 1
    return out


def _sigmoid(f_apb: NDArray[np.float64]) -> NDArray[np.float64]:
    """libsvm's ``sigmoid_predict`` of ``dec * A + B``, in its overflow-safe form."""
    negative = np.exp(-np.abs(f_apb))
    return np.where(f_apb >= 0, negative / (1.0 + negative), 1.0 / (1.0 + negative))


def _couple(pairwise: NDArray[np.float64], classes: int) -> NDArray[np.float64]:
    """Class probabilities (rows x classes) from pairwise ones (rows x pairs, libsvm's pair order)."""
    rows = pairwise.shape[0]
    r = np.zeros((rows, classes, classes))
    pair = 0
    for i in range(classes):
        for j in range(i + 1, classes):
            r[:, i, j] = pairwise[:, pair]
            r[:, j, i] = 1.0 - pairwise[:, pair]
            pair += 1
    return _multiclass_probability(r)  # scikit-learn's libsvm couples two classes the same way


def _multiclass_probability(r: NDArray[np.float64]) -> NDArray[np.float64]:
    """libsvm's ``multiclass_probability`` for every row of ``r`` (rows x k x k), each row stopping on its
    own as libsvm stops."""
    rows, k = r.shape[0], r.shape[1]
    q = -r.transpose(0, 2, 1) * r  # Q[t][j] = -r[j][t] * r[t][j]
    diagonal = (r**2).sum(axis=1) - r[:, np.arange(k), np.arange(k)] ** 2  # sum over j != t of r[j][t]^2
    q[:, np.arange(k), np.arange(k)] = diagonal
    p = np.full((rows, k), 1.0 / k)
    eps = 0.005 / k
    active = np.ones(rows, dtype=bool)
    for _ in range(max(100, k)):
        qp = np.einsum("rtj,rj->rt", q, p)
        pqp = (p * qp).sum(axis=1)
        active &= np.abs(qp - pqp[:, None]).max(axis=1) >= eps
        if not active.any():
            break
        sel = np.nonzero(active)[0]
        ps, qps, pqps, qs = p[sel], qp[sel], pqp[sel], q[sel]
        for t in range(k):
            diff = (-qps[:, t] + pqps) / qs[:, t, t]
            ps[:, t] += diff
            pqps = (pqps + diff * (diff * qs[:, t, t] + 2 * qps[:, t])) / (1 + diff) / (1 + diff)
            qps = (qps + diff[:, None] * qs[:, t, :]) / (1 + diff)[:, None]
            ps /= (1 + diff)[:, None]
        p[sel] = ps
    return p
