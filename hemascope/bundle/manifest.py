"""The bundle manifest, hashing and probability helpers shared by saving and loading."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hemascope.errors import FailedPrecondition

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ModelKind = Literal["sklearn", "xgboost", "kmeans"]

#: Types skops may instantiate from a bundle: the estimators we train and the numpy/scipy pieces they hold.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.svm._classes.SVC",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        "sklearn.cluster._kmeans.KMeans",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "numpy.random.mtrand.RandomState",
        "builtins.slice",
    }
)


class BundleError(FailedPrecondition):
    """A bundle is missing, incomplete, tampered with, or not loadable safely."""

    default_reason = "BAD_BUNDLE"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: ModelKind
    file: str
    sha256: str
    version: str
    temperature: float = 1.0
    abstain_threshold: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: kind-specific data, e.g. ``{"cluster_to_class": [...]}`` for k-means
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: OOD scores above this are flagged out of distribution; 0: no OOD check (or no OOD model)
    ood_threshold: float = 0.0


@dataclass(frozen=True)
class Manifest:
    bundle_version: str
    backbone: str
    weights_hash: str
    dimension: int
    preprocessing: str
    classes: Sequence[str]
    malignant_classes: Sequence[str]
    scaler_file: str
    scaler_sha256: str
    models: Mapping[str, ModelEntry]
    data_fingerprint: str = ""
    library_versions: Mapping[str, str] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    #: the out-of-distribution model (:mod:`hemascope.bundle.ood`); empty in bundles without one
    ood_file: str = ""
    ood_sha256: str = ""
    #: the acquisition reference (:mod:`hemascope.bundle.site`); empty in bundles without one
    site_file: str = ""
    site_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"unsupported bundle format {raw.get('format_version')!r}; expected {FORMAT_VERSION}"
            )
        models = {name: ModelEntry(**entry) for name, entry in raw.pop("models").items()}
        return Manifest(models=models, **raw)


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return out


def apply_temperature(probs: NDArray[np.float64], temperature: float) -> NDArray[np.float64]:
    """Temperature scaling of probabilities: ``softmax(log p / T)``; T=1 leaves them unchanged."""
    if temperature == 1.0:
        return probs
    return softmax(np.log(np.clip(probs, 1e-12, 1.0)) / temperature)
