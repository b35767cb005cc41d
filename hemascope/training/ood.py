"""Fitting the out-of-distribution model of a bundle and its threshold.

The model (:class:`hemascope.bundle.OodModel`) is fitted on the FIT part only: PCA of the scaled
embeddings, then one mean per class and a Ledoit-Wolf shrunk covariance of the class-centred projections,
shared by all classes. A cell's score is its Mahalanobis distance to the class its model predicted.

Each model's threshold is a quantile (default the 97.5th percentile) of the scores of the CALIBRATION
part under that model's predictions: about 2.5% of in-distribution cells are flagged by construction. The
cross-source probe is never used here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from hemascope.bundle import OodModel

DEFAULT_COMPONENTS = 64
DEFAULT_QUANTILE = 0.975


def fit_ood(
    scaled: NDArray[np.float64],
    y: NDArray[np.int64],
    n_classes: int,
    *,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 50,
) -> OodModel:
    """Fits the OOD model on scaled FIT-part embeddings ``scaled`` with class indices ``y``."""
    missing = sorted(set(range(n_classes)) - {int(c) for c in np.unique(y)})
    if missing:
        raise ValueError(f"the OOD model needs every class in its fit data; classes {missing} are missing")
    k = max(1, min(components, scaled.shape[1], len(scaled) - n_classes - 1))
    pca = PCA(n_components=k, random_state=seed).fit(scaled)
    z = pca.transform(scaled)
    class_means = np.stack([z[y == c].mean(axis=0) for c in range(n_classes)])
    shrunk = LedoitWolf(assume_centered=True).fit(z - class_means[y])
    return OodModel(
        mean=np.asarray(pca.mean_, dtype=np.float64),
        components=np.asarray(pca.components_, dtype=np.float64),
        class_means=class_means.astype(np.float64),
        precision=np.asarray(shrunk.precision_, dtype=np.float64),
    )


def ood_threshold(calibration_scores: NDArray[np.float64], quantile: float = DEFAULT_QUANTILE) -> float:
    """The ``quantile`` of the calibration part's scores (in-distribution by construction)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    return float(np.quantile(calibration_scores, quantile))
