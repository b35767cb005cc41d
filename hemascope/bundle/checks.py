"""Checks run on each loaded object before a bundle is accepted.

skops only reports types outside *its own* default trust list, and that list includes every scikit-learn
estimator (a ``FunctionTransformer(func=numpy.log1p)`` loads without a single untrusted type). So the
top-level object of each file must also be one of :data:`TRUSTED_TYPES`, of the shape its role needs, and
agree with the manifest (dimension, classes, k-means cluster mapping): a bundle that would fail at
prediction time fails at load time instead, with the file named.
"""

from __future__ import annotations

from typing import Any

from hemascope.bundle.manifest import TRUSTED_TYPES, BundleError, Manifest, ModelEntry

KINDS = ("sklearn", "xgboost", "kmeans")


def type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _check_trusted(obj: Any, filename: str) -> None:
    if type_name(obj) not in TRUSTED_TYPES:
        raise BundleError(f"{filename} holds a {type_name(obj)}, which is not an allowed bundle type")


def _check_features(obj: Any, filename: str, dimension: int) -> None:
    features = getattr(obj, "n_features_in_", None)
    if features != dimension:
        raise BundleError(f"{filename} expects {features} features; the manifest says dimension {dimension}")


def check_scaler(manifest: Manifest, scaler: Any) -> None:
    _check_trusted(scaler, manifest.scaler_file)
    if not callable(getattr(scaler, "transform", None)):
        raise BundleError(f"{manifest.scaler_file} is not a fitted scaler")
    _check_features(scaler, manifest.scaler_file, manifest.dimension)


def _check_classes(manifest: Manifest, entry: ModelEntry, estimator: Any) -> None:
    found = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
    if found not in (list(range(len(manifest.classes))), list(manifest.classes)):
        raise BundleError(
            f"{entry.file} was trained on classes {found[:10]}; the manifest's are {list(manifest.classes)} "
            "(expected their indices or names, in that order)"
        )


def _check_kmeans(manifest: Manifest, entry: ModelEntry, estimator: Any) -> None:
    mapping = entry.extra.get("cluster_to_class")
    clusters = getattr(getattr(estimator, "cluster_centers_", None), "shape", (0,))[0]
    valid = (
        isinstance(mapping, list)
        and len(mapping) == clusters
        and all(isinstance(c, int) and 0 <= c < len(manifest.classes) for c in mapping)
    )
    if not valid:
        raise BundleError(
            f"model {entry.name}: extra.cluster_to_class must list a class index for each of its "
            f"{clusters} clusters"
        )


def check_model(manifest: Manifest, entry: ModelEntry, estimator: Any) -> None:
    """Raises :class:`BundleError` unless ``estimator`` can serve as ``entry`` of ``manifest``."""
    if entry.kind not in KINDS:
        raise BundleError(f"model {entry.name} has unknown kind {entry.kind!r}; expected one of {KINDS}")
    if entry.kind != "xgboost":
        _check_trusted(estimator, entry.file)
    _check_features(estimator, entry.file, manifest.dimension)
    if entry.kind == "kmeans":
        if not callable(getattr(estimator, "transform", None)):
            raise BundleError(f"{entry.file} is not a fitted k-means model")
        _check_kmeans(manifest, entry, estimator)
        return
    if not callable(getattr(estimator, "predict_proba", None)):
        raise BundleError(f"{entry.file} holds a model without class probabilities (predict_proba)")
    _check_classes(manifest, entry, estimator)
