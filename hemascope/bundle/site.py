"""The bundle's acquisition reference: what its training images of each class looked like.

A class answer is only as good as the acquisitions it was validated on. When the training images of a
class all came from one laboratory, a cell of that class from another laboratory may be answered by how
its image was taken rather than by the cell (the classic case: myeloblasts seen only through one scanner).
The reference keeps, per class, the mean and a Ledoit-Wolf shrunk precision of the standardised
acquisition fingerprints (:mod:`hemascope.imaging.fingerprint`) of the training images of that class, and
a threshold per class: a quantile of the scores of the calibration part, so about ``1 - quantile`` of
in-distribution cells are *atypical* by construction.

``score(f, label)`` is the Mahalanobis distance of a fingerprint to the reference of the class the model
answered; above ``thresholds[label]`` the answer's acquisition was never validated for that class.
Stored as ``site.npz`` (plain arrays, loaded with ``allow_pickle=False``); every shape is checked and the
fingerprint revision must match the running one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle.manifest import BundleError
from hemascope.imaging.fingerprint import REVISION, SIZE

FloatArray = NDArray[np.float64]
SITE_FILE = "site.npz"
_ARRAYS = ("centre", "scale", "class_means", "precisions", "thresholds", "quantile", "revision")


@dataclass(frozen=True)
class SiteReference:
    centre: FloatArray  # (SIZE,): median of the fit fingerprints
    scale: FloatArray  # (SIZE,): spread within classes, floored at the fingerprint's resolution
    class_means: FloatArray  # (classes, SIZE) in standardised units
    precisions: FloatArray  # (classes, SIZE, SIZE): per-class shrunk precision
    thresholds: FloatArray  # (classes,): score above which an answer of that class is atypical
    quantile: FloatArray  # (): the calibration quantile the thresholds were taken at
    revision: FloatArray  # (): the fingerprint revision the reference was fitted on

    @property
    def expected_atypical_rate(self) -> float:
        """The share of in-distribution answers flagged atypical by construction."""
        return float(1.0 - self.quantile)

    def standardise(self, fingerprints: NDArray[np.floating[Any]]) -> FloatArray:
        out: FloatArray = (np.asarray(fingerprints, dtype=np.float64) - self.centre) / self.scale
        return out

    def score(self, fingerprints: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]]) -> FloatArray:
        """Distance of each fingerprint to the reference of the class ``labels[i]`` (N,)."""
        z = self.standardise(np.atleast_2d(fingerprints))
        idx = np.asarray(labels, dtype=np.intp)
        diff = z - self.class_means[idx]
        squared = np.einsum("ij,ijk,ik->i", diff, self.precisions[idx], diff)
        out: FloatArray = np.sqrt(np.maximum(squared, 0.0))
        return out

    def atypical(self, scores: FloatArray, labels: NDArray[np.integer[Any]]) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = scores > self.thresholds[np.asarray(labels, dtype=np.intp)]
        return out

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, **{name: getattr(self, name) for name in _ARRAYS})

    @staticmethod
    def load(path: Path, *, n_classes: int) -> SiteReference:
        """Reads ``path`` without unpickling anything; :class:`BundleError` unless every shape fits."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.asarray(data[name], dtype=np.float64) for name in _ARRAYS}
        except Exception as exc:
            raise BundleError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc
        ref = SiteReference(**arrays)
        expected = {
            "centre": (SIZE,),
            "scale": (SIZE,),
            "class_means": (n_classes, SIZE),
            "precisions": (n_classes, SIZE, SIZE),
            "thresholds": (n_classes,),
            "quantile": (),
            "revision": (),
        }
        for name, shape in expected.items():
            value = getattr(ref, name)
            if value.shape != shape:
                raise BundleError(f"{path.name}: {name} has shape {value.shape}; expected {shape}")
            if not np.isfinite(value).all():
                raise BundleError(f"{path.name}: {name} holds non-finite values")
        if int(ref.revision) != REVISION:
            raise BundleError(
                f"{path.name} was fitted on acquisition fingerprint revision {int(ref.revision)}; this "
                f"version computes revision {REVISION}: refit the bundle"
            )
        if (ref.scale <= 0).any():
            raise BundleError(f"{path.name}: scale must be positive")
        return ref
