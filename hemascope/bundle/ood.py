"""The bundle's out-of-distribution model: a Mahalanobis distance in (scaled, PCA-projected) embedding space.

``score(x, label) = sqrt((z - mu_label)^T P (z - mu_label))`` with ``z = (x - mean) @ components.T``, one
mean ``mu_c`` per class and one shared precision matrix ``P`` (the inverse of a shrunk covariance of the
class-centred training embeddings). The model is plain arrays, stored as ``ood.npz`` and loaded with
``allow_pickle=False``, so loading it never runs code; every array's shape is checked against the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle.manifest import BundleError

FloatArray = NDArray[np.float64]
OOD_FILE = "ood.npz"
_ARRAYS = ("mean", "components", "class_means", "precision")


@dataclass(frozen=True)
class OodModel:
    mean: FloatArray  # (dimension,): centring before the projection
    components: FloatArray  # (k, dimension): projection rows (PCA components)
    class_means: FloatArray  # (classes, k): per-class means in the projected space
    precision: FloatArray  # (k, k): inverse of the shared shrunk covariance

    def project(self, scaled: NDArray[np.floating[Any]]) -> FloatArray:
        out: FloatArray = (np.asarray(scaled, dtype=np.float64) - self.mean) @ self.components.T
        return out

    def score(self, scaled: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]]) -> FloatArray:
        """Mahalanobis distance of each (scaled) embedding to the mean of its class ``labels[i]``."""
        return self.score_projected(self.project(scaled), labels)

    def score_projected(self, projected: FloatArray, labels: NDArray[np.integer[Any]]) -> FloatArray:
        """:meth:`score` from embeddings already :meth:`project`-ed (one projection serves every model's
        labels for the same embeddings)."""
        diff = projected - self.class_means[np.asarray(labels, dtype=np.intp)]
        squared = np.einsum("ij,jk,ik->i", diff, self.precision, diff)
        out: FloatArray = np.sqrt(np.maximum(squared, 0.0))
        return out

    def min_score(self, scaled: NDArray[np.floating[Any]]) -> FloatArray:
        """Distance to the nearest class mean (the score of the most typical label)."""
        z = self.project(scaled)
        best = np.full(len(z), np.inf)
        for mu in self.class_means:
            diff = z - mu
            best = np.minimum(best, np.einsum("ij,jk,ik->i", diff, self.precision, diff))
        out: FloatArray = np.sqrt(np.maximum(best, 0.0))
        return out

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, **{name: getattr(self, name) for name in _ARRAYS})

    @staticmethod
    def load(path: Path, *, dimension: int, n_classes: int) -> OodModel:
        """Reads ``path`` without unpickling anything; :class:`BundleError` unless every shape fits."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.asarray(data[name], dtype=np.float64) for name in _ARRAYS}
        except Exception as exc:
            raise BundleError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc
        model = OodModel(**arrays)
        k = model.components.shape[0] if model.components.ndim == 2 else -1
        expected = {
            "mean": (dimension,),
            "components": (k, dimension),
            "class_means": (n_classes, k),
            "precision": (k, k),
        }
        for name, shape in expected.items():
            actual = getattr(model, name).shape
            if k < 1 or actual != shape:
                raise BundleError(f"{path.name}: {name} has shape {actual}; expected {shape}")
            if not np.isfinite(getattr(model, name)).all():
                raise BundleError(f"{path.name}: {name} holds non-finite values")
        return model
