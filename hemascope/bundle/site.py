"""The bundle's acquisition reference: what its training images of each class looked like.

A class answer is only as good as the acquisitions it was validated on. When the training images of a
class all came from one laboratory, a cell of that class from another laboratory may be answered by how
its image was taken rather than by the cell (the classic case: myeloblasts seen only through one scanner).
The reference keeps, per class, the mean and a precision of the acquisition fingerprints
(:mod:`hemascope.imaging.fingerprint`) of the training images of that class (a Ledoit-Wolf shrunk
covariance of the values standardised by the class's own spread, floored at each entry's resolution), and
a threshold per class: a quantile of the scores of the calibration part, so about ``1 - quantile`` of
in-distribution cells are *atypical* by construction.

Only the entries marked ``used`` are compared (see :data:`hemascope.training.site_reference.COMPARED`): the
stain colours of nuclei and red cells are measured but vary from slide to slide within one laboratory as
much as between laboratories. ``score(f, label)`` is the Mahalanobis distance of a fingerprint to the
reference of the class the model answered; above ``thresholds[label]`` the answer's acquisition was never
validated for that class. Stored as ``site.npz`` (plain arrays, loaded with ``allow_pickle=False``); every
shape is checked and the fingerprint revision must match the running one.
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
_ARRAYS = ("used", "class_means", "precisions", "thresholds", "quantile", "revision")


@dataclass(frozen=True)
class SiteReference:
    used: FloatArray  # (SIZE,): 1 for the entries the reference compares, 0 for those it ignores
    class_means: FloatArray  # (classes, SIZE): per-class mean fingerprint (0 where unused)
    precisions: FloatArray  # (classes, SIZE, SIZE): per-class shrunk precision, in fingerprint units
    thresholds: FloatArray  # (classes,): score above which an answer of that class is atypical
    quantile: FloatArray  # (): the calibration quantile the thresholds were taken at
    revision: FloatArray  # (): the fingerprint revision the reference was fitted on

    @property
    def expected_atypical_rate(self) -> float:
        """The share of in-distribution answers flagged atypical by construction."""
        return float(1.0 - self.quantile)

    def score(self, fingerprints: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]]) -> FloatArray:
        """Distance of each fingerprint to the reference of the class ``labels[i]`` (N,)."""
        idx = np.asarray(labels, dtype=np.intp)
        diff = (np.atleast_2d(np.asarray(fingerprints, dtype=np.float64)) - self.class_means[idx]) * self.used
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
            "used": (SIZE,),
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
        if not np.isin(ref.used, (0.0, 1.0)).all() or not ref.used.any():
            raise BundleError(f"{path.name}: used must be 0 or 1 per entry, with at least one 1")
        return ref
