"""A synthetic model bundle: all five model kinds trained on random class-shaped vectors.

For tests (tiny, 8-d), benchmarks (1280-d, the default backbone's size) and trying the service without a
trained bundle. The numbers it predicts mean nothing about cells; its manifest says so in ``training``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import Manifest, ModelKind, TrainedModel, save_bundle
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES

MODEL_NAMES = ("logistic_regression", "svm", "random_forest", "xgboost", "kmeans")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to build. ``separation`` scales the distance between class means (higher: easier data)."""

    version: str = "synthetic-1"
    dimension: int = 8
    samples: int = 150
    seed: int = 0
    separation: float = 1.5
    backbone: str = "efficientnet_lite0"
    weights_hash: str = "0" * 64
    preprocessing: str = "synthetic"
    trees: int = 10  # random forest trees and XGBoost rounds
    xgb_max_depth: int = 4
    kmeans_clusters: int = 8
    models: tuple[str, ...] = MODEL_NAMES
    abstain_thresholds: Mapping[str, float] = field(default_factory=dict)
    temperatures: Mapping[str, float] = field(default_factory=dict)
    #: with an out-of-distribution model, thresholded at this quantile of the training scores (None: none)
    ood_quantile: float | None = None
    #: with an acquisition reference fitted on :func:`synthetic_fingerprints` at this quantile (None: none)
    site_quantile: float | None = None


def synthetic_data(
    spec: SyntheticSpec, samples: int | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``samples`` vectors around one random mean per class, and their class indices."""
    rng = np.random.default_rng(spec.seed)
    means = rng.normal(scale=spec.separation, size=(len(CLASSES), spec.dimension))
    labels = np.arange(samples or spec.samples) % len(CLASSES)
    vectors = means[labels] + rng.normal(size=(len(labels), spec.dimension))
    return vectors.astype(np.float32), labels.astype(np.int64)


def synthetic_fingerprints(
    spec: SyntheticSpec, labels: NDArray[np.int64], shift: float = 0.0, seed: int = 1
) -> NDArray[np.float32]:
    """Acquisition fingerprints for images of classes ``labels``: one random mean per class, noise of three
    times each entry's resolution; ``shift`` moves every entry by that many noise widths (another site)."""
    from hemascope.imaging.fingerprint import RESOLUTION, SIZE

    width = 3.0 * np.asarray(RESOLUTION)
    means = np.random.default_rng(spec.seed).normal(scale=2.0, size=(len(CLASSES), SIZE)) * width
    noise = np.random.default_rng(seed).normal(size=(len(labels), SIZE)) * width
    return (means[labels] + noise + shift * width).astype(np.float32)


def _estimator(name: str, spec: SyntheticSpec) -> Any:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC
    from xgboost import XGBClassifier

    makers: dict[str, Any] = {
        "logistic_regression": lambda: LogisticRegression(max_iter=1000),
        "svm": lambda: SVC(probability=True, random_state=spec.seed),
        "random_forest": lambda: RandomForestClassifier(n_estimators=spec.trees, random_state=spec.seed),
        "xgboost": lambda: XGBClassifier(
            n_estimators=spec.trees, max_depth=spec.xgb_max_depth, random_state=spec.seed
        ),
        "kmeans": lambda: KMeans(spec.kmeans_clusters, n_init=3, random_state=spec.seed),
    }
    return makers[name]()


def _train(name: str, spec: SyntheticSpec, x: NDArray[np.float64], y: NDArray[np.int64]) -> TrainedModel:
    estimator = _estimator(name, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) is deprecated in 1.9
        estimator.fit(x, y)
    kind: ModelKind = "xgboost" if name == "xgboost" else "kmeans" if name == "kmeans" else "sklearn"
    extra: dict[str, Any] = {}
    if kind == "kmeans":
        clusters = estimator.labels_
        extra["cluster_to_class"] = [
            int(np.bincount(y[clusters == c], minlength=len(CLASSES)).argmax())
            for c in range(spec.kmeans_clusters)
        ]
    return TrainedModel(
        estimator=estimator,
        kind=kind,
        version=f"{spec.version}-{name}",
        temperature=spec.temperatures.get(name, 1.0),
        abstain_threshold=spec.abstain_thresholds.get(name, 0.0),
        extra=extra,
    )


def build_synthetic_bundle(target: Path, spec: SyntheticSpec | None = None) -> Manifest:
    """Trains the models of ``spec`` and writes them to ``target`` with :func:`save_bundle` (atomically)."""
    from sklearn.preprocessing import StandardScaler

    spec = spec or SyntheticSpec()
    vectors, labels = synthetic_data(spec)
    scaler = StandardScaler().fit(vectors.astype(np.float64))
    scaled = scaler.transform(vectors.astype(np.float64))
    models = {name: _train(name, spec, scaled, labels) for name in spec.models}
    ood = None
    if spec.ood_quantile is not None:
        from hemascope.bundle import LoadedModel, ModelEntry
        from hemascope.training.ood import fit_ood, ood_threshold

        ood = fit_ood(scaled, labels, len(CLASSES), components=spec.dimension, seed=spec.seed)
        for name, model in models.items():
            entry = ModelEntry(name, model.kind, "", "", "", extra=model.extra)
            predicted = LoadedModel(entry, model.estimator, len(CLASSES)).raw_proba(scaled).argmax(axis=1)
            model.ood_threshold = ood_threshold(ood.score(scaled, predicted), spec.ood_quantile)
    site = None
    if spec.site_quantile is not None:
        from hemascope.training.site_reference import fit_site_reference

        calib_labels = np.arange(len(labels)) % len(CLASSES)
        site = fit_site_reference(
            synthetic_fingerprints(spec, labels, seed=1),
            labels,
            synthetic_fingerprints(spec, calib_labels, seed=2),
            calib_labels,
            len(CLASSES),
            quantile=spec.site_quantile,
        )
    fields = {
        "bundle_version": spec.version,
        "backbone": spec.backbone,
        "weights_hash": spec.weights_hash,
        "dimension": spec.dimension,
        "preprocessing": spec.preprocessing,
        "classes": list(CLASSES),
        "malignant_classes": list(MALIGNANT_CLASSES),
        "data_fingerprint": hashlib.sha256(vectors.tobytes()).hexdigest(),
        "training": {"synthetic": True, "samples": spec.samples, "seed": spec.seed},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return save_bundle(target, fields, scaler, models, ood, site)
