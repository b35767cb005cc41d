"""The study's classical models on embeddings, with its hyperparameters.

k-means is unsupervised: its clusters are mapped to classes by the Hungarian method on the training part
(the study's 6% k-means accuracy came from comparing unmapped cluster ids with labels).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.svm import SVC

from hemascope.bundle import ModelKind

STUDY_SEED = 50


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    make: Callable[[], Any]
    description: str


def _svc() -> SVC:
    with warnings.catch_warnings():
        # probability=True (Platt scaling with internal CV) is the study's setting; sklearn 1.9 deprecates
        # the flag in favour of CalibratedClassifierCV, which does the same thing.
        warnings.simplefilter("ignore", FutureWarning)
        return SVC(kernel="rbf", probability=True, gamma="auto", random_state=STUDY_SEED)


def _xgboost() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=100,
        max_depth=10,
        learning_rate=0.1,
        objective="multi:softprob",
        tree_method="hist",
        n_jobs=2,
        random_state=STUDY_SEED,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "logistic_regression",
            "sklearn",
            lambda: LogisticRegression(solver="lbfgs", max_iter=1000, C=1.0),
            "multinomial logistic regression, lbfgs, max_iter 1000, L2 (C=1)",
        ),
        ModelSpec("svm", "sklearn", _svc, "SVM, RBF kernel, gamma 'auto', probability=True (Platt)"),
        ModelSpec(
            "random_forest",
            "sklearn",
            lambda: RandomForestClassifier(
                n_estimators=100, max_depth=20, criterion="gini", random_state=42, n_jobs=2
            ),
            "random forest, 100 trees, max depth 20, gini, random_state 42",
        ),
        ModelSpec("xgboost", "xgboost", _xgboost, "XGBoost, 100 rounds, max depth 10, lr 0.1, softprob"),
        ModelSpec(
            "kmeans",
            "kmeans",
            lambda: KMeans(n_clusters=5, init="k-means++", n_init=10, random_state=STUDY_SEED),
            "k-means, k=5, k-means++, n_init 10; clusters mapped to classes by the Hungarian method",
        ),
    )
}


def hungarian_mapping(clusters: NDArray[np.int64], y: NDArray[np.int64], n_classes: int) -> list[int]:
    """cluster id -> class index maximising agreement on the training part (a one-to-one assignment)."""
    cm = confusion_matrix(y, clusters, labels=list(range(n_classes)))  # rows: class, columns: cluster
    rows, cols = linear_sum_assignment(-cm)
    mapping = [0] * n_classes
    for cls, cluster in zip(rows, cols, strict=True):
        mapping[int(cluster)] = int(cls)
    return mapping


@dataclass
class Fitted:
    estimator: Any
    extra: dict[str, Any]


def fit_model(spec: ModelSpec, x: NDArray[np.float64], y: NDArray[np.int64], n_classes: int) -> Fitted:
    estimator = spec.make()
    if spec.kind == "kmeans":
        estimator.fit(x)
        mapping = hungarian_mapping(estimator.predict(x).astype(np.int64), y, n_classes)
        return Fitted(estimator, {"cluster_to_class": mapping})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        estimator.fit(x, y)
    return Fitted(estimator, {})
