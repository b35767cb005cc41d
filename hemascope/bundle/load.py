"""Loading a bundle safely: hashes checked first, skops limited to trusted types, XGBoost from JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle.checks import check_model, check_scaler
from hemascope.bundle.fast import FastPath, model_fast_path, scaler_fast_path
from hemascope.bundle.manifest import (
    MANIFEST,
    TRUSTED_TYPES,
    BundleError,
    Manifest,
    ModelEntry,
    apply_temperature,
    softmax,
)
from hemascope.bundle.ood import OodModel
from hemascope.bundle.site import SiteReference
from hemascope.files import file_sha256

Probabilities = NDArray[np.float64]


def _verified(root: Path, filename: str, expected: str) -> Path:
    path = root / filename
    if path.parent != root or not path.is_file():
        raise BundleError(f"bundle file missing: {filename}")
    actual = file_sha256(path)
    if actual != expected:
        raise BundleError(f"bundle file {filename} does not match its manifest hash (tampered or truncated)")
    return path


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
        refused = sorted(untrusted - TRUSTED_TYPES)
        if refused:
            raise BundleError(f"{path.name} holds types that are not allowed: {refused[:5]}")
        return sio.load(path, trusted=sorted(untrusted))
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc


def _load_xgboost(path: Path) -> Any:
    from xgboost import XGBClassifier

    model = XGBClassifier()
    try:
        model.load_model(str(path))
    except Exception as exc:
        raise BundleError(f"cannot load {path.name}: {type(exc).__name__}") from exc
    return model


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    estimator: Any
    n_classes: int
    #: an exact NumPy stand-in for the estimator's ``predict_proba`` (``transform`` for k-means), or None:
    #: see :mod:`hemascope.bundle.fast` and :meth:`LoadedBundle.with_fast_paths`
    fast: FastPath | None = None

    def raw_proba(self, scaled: NDArray[np.float64]) -> Probabilities:
        """Class probabilities (bundle class order) before calibration."""
        if self.entry.kind == "kmeans":
            distances = self.fast(scaled) if self.fast is not None else self.estimator.transform(scaled)
            # per-row scale: one embedding's probabilities never depend on the others in its batch
            scale = 2 * np.median(distances, axis=1, keepdims=True) ** 2 + 1e-12
            cluster_p = softmax(-(distances**2) / scale)
            mapping = self.entry.extra["cluster_to_class"]
            probs = np.zeros((scaled.shape[0], self.n_classes))
            for cluster, cls in enumerate(mapping):
                probs[:, cls] += cluster_p[:, cluster]
            return probs
        if self.fast is not None:
            return self.fast(scaled)
        out: Probabilities = np.asarray(self.estimator.predict_proba(scaled), dtype=np.float64)
        return out

    def proba(self, scaled: NDArray[np.float64]) -> Probabilities:
        """Calibrated class probabilities."""
        return apply_temperature(self.raw_proba(scaled), self.entry.temperature)


@dataclass(frozen=True)
class LoadedBundle:
    root: Path
    manifest: Manifest
    scaler: Any
    models: Mapping[str, LoadedModel]
    #: the out-of-distribution model; ``None`` for bundles without one (they load and serve as before)
    ood: OodModel | None = None
    #: the acquisition reference; ``None`` for bundles without one (no answer is checked for it)
    site: SiteReference | None = None
    #: an exact NumPy stand-in for the scaler's ``transform``, or None (see :meth:`with_fast_paths`)
    fast_scale: FastPath | None = None

    def with_fast_paths(self) -> LoadedBundle:
        """This bundle with exact NumPy paths for the scaler and the models that have one (a random forest,
        k-means, a multiclass logistic regression, an SVM): the same probabilities, bit for bit, without
        scikit-learn's per-call overhead."""
        models = {
            name: replace(model, fast=model_fast_path(model.estimator)) for name, model in self.models.items()
        }
        return replace(self, models=models, fast_scale=scaler_fast_path(self.scaler))

    def ood_scores(
        self, scaled: NDArray[np.float64], labels: NDArray[np.integer[Any]]
    ) -> Probabilities | None:
        """OOD score of each scaled embedding for its label, or ``None`` when the bundle has no OOD model."""
        return None if self.ood is None else self.ood.score(scaled, labels)

    def scale(self, embeddings: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        matrix = np.asarray(embeddings, dtype=np.float64)
        if self.fast_scale is not None:
            return self.fast_scale(matrix)
        out: NDArray[np.float64] = self.scaler.transform(matrix)
        return out

    def predict(
        self, embeddings: NDArray[np.floating[Any]], names: Sequence[str] | None = None
    ) -> dict[str, Probabilities]:
        """Calibrated probabilities per model for ``embeddings`` (N x dimension)."""
        scaled = self.scale(embeddings)
        chosen = list(names) if names else list(self.models)
        return {name: self.models[name].proba(scaled) for name in chosen}


def load_bundle(root: Path) -> LoadedBundle:
    """Loads and verifies a bundle; raises :class:`BundleError` with the reason on any problem."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"no {MANIFEST} in {root}; is this a model bundle?")
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"unreadable {MANIFEST}: {type(exc).__name__}: {exc}") from exc
    scaler = _load_skops(_verified(root, manifest.scaler_file, manifest.scaler_sha256))
    check_scaler(manifest, scaler)
    models = {}
    for name, entry in manifest.models.items():
        path = _verified(root, entry.file, entry.sha256)
        estimator = _load_xgboost(path) if entry.kind == "xgboost" else _load_skops(path)
        check_model(manifest, entry, estimator)
        models[name] = LoadedModel(entry, estimator, len(manifest.classes))
    ood = None
    if manifest.ood_file:
        path = _verified(root, manifest.ood_file, manifest.ood_sha256)
        ood = OodModel.load(path, dimension=manifest.dimension, n_classes=len(manifest.classes))
    site = None
    if manifest.site_file:
        path = _verified(root, manifest.site_file, manifest.site_sha256)
        site = SiteReference.load(path, n_classes=len(manifest.classes))
    return LoadedBundle(root, manifest, scaler, models, ood, site)
