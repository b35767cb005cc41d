"""Exact NumPy prediction paths for a bundle's scikit-learn objects, for the few rows one serving call holds.

scikit-learn's ``predict_proba`` and ``transform`` spend most of a one-row call on input validation and,
for a random forest, on dispatching each of its trees through joblib (about 13 ms for 100 trees on one row,
where walking the trees takes well under 1 ms). The paths here do the same arithmetic as the library, in the
same order, so they give the same numbers, bit for bit:

- :class:`ForestProba` (``RandomForestClassifier.predict_proba`` with ``n_jobs=1``): the rows are cast to
  float32 as the trees do, every tree is walked (``x[feature] <= threshold`` goes left), and the leaves'
  class fractions are summed tree after tree from zero (a cumulative sum, so the order is fixed) and
  divided by the number of trees.
- :class:`KMeansDistances` (``KMeans.transform``): ``sqrt(max(-2 x.c + |x|^2 + |c|^2, 0))``, the
  library's float64 formula with the same operations in the same order.
- :class:`LogisticProba` (multiclass ``LogisticRegression.predict_proba``): ``x @ coef.T + intercept``
  and the library's softmax (the row maximum subtracted, exp, divided by the row sum).
- :class:`SvcProba` (``SVC.predict_proba``, dense, probability estimates): libsvm's own call, as the library
  makes it, without the library's per-call input validation (done here once: finite float64 rows of the
  right width, C order).
- :class:`ScalerTransform` (``StandardScaler.transform``): ``(x - mean) / scale``.

:func:`fast_paths` builds them for a loaded bundle; an object it does not recognise keeps the library's
path. Each path hands rows it was not built for (non-finite values, a wrong width) back to the library, so
the library's own behaviour (and errors) stay what callers see. ``tests/unit/test_bundle_fast.py`` holds
them to the library's output on the committed bundle and on random inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
#: A fast path: rows (N x dimension) -> what the library call gives for them.
FastPath = Callable[[NDArray[np.floating[Any]]], FloatArray]


def _usable(rows: NDArray[np.floating[Any]], dimension: int) -> bool:
    return rows.ndim == 2 and rows.shape[1] == dimension and bool(np.isfinite(rows).all())


class ForestProba:
    """``predict_proba`` of a fitted single-output ``RandomForestClassifier`` (sequential accumulation).

    Walking the trees a level at a time for every row costs more than the library's compiled walk beyond
    about 200 rows (100 trees, depth 20), so calls with more than :attr:`MAX_ROWS` rows go to the library.
    """

    MAX_ROWS = 128

    def __init__(self, forest: Any) -> None:
        self._forest = forest
        trees = [estimator.tree_ for estimator in forest.estimators_]
        self.n_trees = len(trees)
        self.dimension = int(forest.n_features_in_)
        self.n_classes = int(forest.n_classes_)
        offsets = np.cumsum([0] + [tree.node_count for tree in trees[:-1]])
        self.roots = offsets.astype(np.intp)
        features, thresholds, lefts, rights, values = [], [], [], [], []
        for offset, tree in zip(offsets, trees, strict=True):
            index = np.arange(tree.node_count, dtype=np.intp)
            leaf = tree.children_left < 0
            # A leaf points to itself, so walking past it keeps it; its test reads feature 0, harmlessly.
            lefts.append(np.where(leaf, index, tree.children_left) + offset)
            rights.append(np.where(leaf, index, tree.children_right) + offset)
            features.append(np.where(leaf, 0, tree.feature).astype(np.intp))
            thresholds.append(np.asarray(tree.threshold, dtype=np.float64))
            values.append(np.asarray(tree.value[:, 0, : self.n_classes], dtype=np.float64))
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.value = np.concatenate(values)
        self.depth = max(int(tree.max_depth) for tree in trees)

    @staticmethod
    def supports(model: Any) -> bool:
        """True for a fitted single-output random forest (missing-value routing never applies: rows with
        NaN go to the library)."""
        from sklearn.ensemble import RandomForestClassifier

        if type(model) is not RandomForestClassifier or not hasattr(model, "estimators_"):
            return False
        return int(getattr(model, "n_outputs_", 0)) == 1 and len(model.estimators_) > 0

    def leaves(self, rows: NDArray[np.floating[Any]]) -> NDArray[np.intp]:
        """The leaf (index into the concatenated nodes) each row reaches in each tree: N x trees."""
        x = np.asarray(rows, dtype=np.float32)  # the trees compare float32 features with float64 thresholds
        row_index = np.arange(len(x), dtype=np.intp)[:, None]
        node = np.broadcast_to(self.roots, (len(x), self.n_trees))
        for _ in range(self.depth):
            go_left = x[row_index, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return node

    def __call__(self, rows: NDArray[np.floating[Any]]) -> FloatArray:
        if len(rows) > self.MAX_ROWS or not _usable(rows, self.dimension):
            return np.asarray(self._forest.predict_proba(rows), dtype=np.float64)
        per_tree = self.value[self.leaves(rows)]  # N x trees x classes
        total = np.zeros((len(rows), 1, self.n_classes))
        summed = np.cumsum(np.concatenate([total, per_tree], axis=1), axis=1)[:, -1, :]
        out: FloatArray = summed / self.n_trees
        return out


class KMeansDistances:
    """``transform`` of a fitted float64 ``KMeans``: the distance of each row to each centre."""

    def __init__(self, kmeans: Any) -> None:
        self._kmeans = kmeans
        self.centers = kmeans.cluster_centers_
        self.dimension = int(self.centers.shape[1])
        self.center_norms = np.einsum("ij,ij->i", self.centers, self.centers)[None, :]

    @staticmethod
    def supports(model: Any) -> bool:
        from sklearn.cluster import KMeans

        return (
            type(model) is KMeans
            and hasattr(model, "cluster_centers_")
            and model.cluster_centers_.dtype == np.float64
        )

    def __call__(self, rows: NDArray[np.floating[Any]]) -> FloatArray:
        if not _usable(rows, self.dimension) or rows.dtype != np.float64:
            return np.asarray(self._kmeans.transform(rows), dtype=np.float64)
        x = np.asarray(rows)
        distances: FloatArray = -2 * (x @ self.centers.T)
        distances += np.einsum("ij,ij->i", x, x)[:, None]
        distances += self.center_norms
        np.maximum(distances, 0.0, out=distances)
        np.sqrt(distances, out=distances)
        return distances


class LogisticProba:
    """``predict_proba`` of a fitted multiclass (more than two classes) ``LogisticRegression``."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.coef = model.coef_
        self.intercept = model.intercept_
        self.dimension = int(self.coef.shape[1])

    @staticmethod
    def supports(model: Any) -> bool:
        from sklearn.linear_model import LogisticRegression

        return (
            type(model) is LogisticRegression
            and hasattr(model, "coef_")
            and np.size(model.classes_) > 2
            and model.coef_.dtype == np.float64
        )

    def __call__(self, rows: NDArray[np.floating[Any]]) -> FloatArray:
        if not _usable(rows, self.dimension) or rows.dtype != np.float64:
            return np.asarray(self._model.predict_proba(rows), dtype=np.float64)
        scores: FloatArray = rows @ self.coef.T + self.intercept
        scores -= np.max(scores, axis=1).reshape((-1, 1))
        np.exp(scores, out=scores)
        scores /= np.sum(scores, axis=1).reshape((-1, 1))
        return scores


class SvcProba:
    """``predict_proba`` of a fitted dense ``SVC`` with a built-in kernel and probability estimates."""

    def __init__(self, svc: Any) -> None:
        self._svc = svc
        self.dimension = int(svc.support_vectors_.shape[1])

    @staticmethod
    def supports(model: Any) -> bool:
        from sklearn.svm import SVC

        if type(model) is not SVC or not hasattr(model, "support_vectors_") or model._sparse:
            return False
        vectors = model.support_vectors_
        return (
            model.kernel in ("linear", "poly", "rbf", "sigmoid")
            and model._probA.size > 0
            and model._probB.size > 0
            and vectors.dtype == np.float64
            and vectors.ndim == 2
            and int(model.n_support_.sum()) == vectors.shape[0]  # the library's own consistency check
        )

    def __call__(self, rows: NDArray[np.floating[Any]]) -> FloatArray:
        if not _usable(rows, self.dimension) or rows.dtype != np.float64:
            return np.asarray(self._svc.predict_proba(rows), dtype=np.float64)
        out: FloatArray = self._svc._dense_predict_proba(np.ascontiguousarray(rows))
        return out


class ScalerTransform:
    """``transform`` of a fitted ``StandardScaler`` on float64 rows."""

    def __init__(self, scaler: Any) -> None:
        self._scaler = scaler
        self.mean = scaler.mean_ if scaler.with_mean else None
        self.scale = scaler.scale_ if scaler.with_std else None
        self.dimension = int(scaler.n_features_in_)

    @staticmethod
    def supports(scaler: Any) -> bool:
        from sklearn.preprocessing import StandardScaler

        if type(scaler) is not StandardScaler or not hasattr(scaler, "n_features_in_"):
            return False
        return all(
            getattr(scaler, name, None) is None or getattr(scaler, name).dtype == np.float64
            for name in ("mean_", "scale_")
        )

    def __call__(self, rows: NDArray[np.floating[Any]]) -> FloatArray:
        x = np.asarray(rows, dtype=np.float64)
        if not _usable(x, self.dimension):
            out: FloatArray = self._scaler.transform(x)
            return out
        x = x.copy()
        if self.mean is not None:
            x -= self.mean
        if self.scale is not None:
            x /= self.scale
        return x


def model_fast_path(estimator: Any) -> FastPath | None:
    """The fast path for ``estimator`` (its ``predict_proba``, or ``transform`` for k-means), or None."""
    if ForestProba.supports(estimator):
        return ForestProba(estimator)
    if KMeansDistances.supports(estimator):
        return KMeansDistances(estimator)
    if LogisticProba.supports(estimator):
        return LogisticProba(estimator)
    if SvcProba.supports(estimator):
        return SvcProba(estimator)
    return None


def scaler_fast_path(scaler: Any) -> FastPath | None:
    return ScalerTransform(scaler) if ScalerTransform.supports(scaler) else None
