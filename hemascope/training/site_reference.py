"""Fitting a bundle's acquisition reference (:class:`hemascope.bundle.site.SiteReference`).

Fitted on the FIT part's fingerprints, one Ledoit-Wolf shrunk Gaussian per class, each entry standardised
by that class's own spread (the inter-quartile range, floored at the fingerprint's resolution), so that a
difference between laboratories is measured against the variation inside one, and an entry that barely
varies within a class (the pixel size of one scanner) keeps its weight instead of being shrunk away.
Each class's threshold is a quantile (default the 95th percentile) of the CALIBRATION part's scores
against their own class; a class with fewer than :data:`MIN_PER_CLASS` calibration images takes the
pooled quantile of all classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sklearn.covariance import LedoitWolf

from hemascope.bundle.site import SiteReference
from hemascope.datasets import CLASSES
from hemascope.imaging.fingerprint import NAMES, RESOLUTION, REVISION, SIZE
from hemascope.training.fingerprints import fingerprint_files

if TYPE_CHECKING:
    from hemascope.training.multisource import SourcedData
    from hemascope.training.split import Split

#: The fingerprint entries a reference compares: the scanner's and camera's (pixel size, white balance of the
#: background, focus, noise, compression, highlights). The stain colours of nuclei and red cells and the
#: darkest tones are left out: they vary from slide to slide (patient to patient) within one laboratory as
#: much as between laboratories, and raised false alarms on unseen patients of a known laboratory in the
#: leave-one-source-out study (reports/site-shift).
COMPARED: tuple[str, ...] = (
    "log_width",
    "log_height",
    "background_l",
    "background_a",
    "background_b",
    "background_l_spread",
    "log_laplacian_energy",
    "log_gradient",
    "focus_ratio",
    "log_noise",
    "jpeg_blockiness",
    "luminance_p99",
)
DEFAULT_QUANTILE = 0.95
MIN_PER_CLASS = 50
_IQR_TO_SD = 1.349


def fit_site_reference(
    fit: NDArray[np.floating],
    fit_y: NDArray[np.integer],
    calib: NDArray[np.floating],
    calib_y: NDArray[np.integer],
    n_classes: int,
    *,
    quantile: float = DEFAULT_QUANTILE,
    compared: Sequence[str] = COMPARED,
) -> SiteReference:
    """The reference of fingerprints ``fit`` (N x SIZE) with class indices ``fit_y``; thresholds from
    ``calib``/``calib_y``. A class with fewer than two fit images is given the reference of all of them."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    fit = np.asarray(fit, dtype=np.float64)
    if fit.ndim != 2 or fit.shape[1] != SIZE:
        raise ValueError(f"fingerprints must be N x {SIZE}, got {fit.shape}")
    labels = np.asarray(fit_y, dtype=np.intp)
    counts = np.bincount(labels, minlength=n_classes)
    if len(fit) < 2:
        raise ValueError("the acquisition reference needs at least two fit images")
    unknown = sorted(set(compared) - set(NAMES))
    if unknown or not compared:
        raise ValueError(f"compared must name fingerprint entries; unknown: {unknown}")
    used = np.array([name in compared for name in NAMES], dtype=np.float64)
    keep = np.flatnonzero(used)
    floor = np.asarray(RESOLUTION, dtype=np.float64)[keep]
    means, precisions = [], []
    for c in range(n_classes):
        # a class with fewer than two fit images (possible on small studies) gets the pooled reference
        rows = fit[labels == c][:, keep] if counts[c] >= 2 else fit[:, keep]
        q75, q25 = np.percentile(rows, [75, 25], axis=0)
        scale = np.maximum((q75 - q25) / _IQR_TO_SD, floor)
        shrunk = LedoitWolf().fit(rows / scale)
        mean, precision = np.zeros(SIZE), np.zeros((SIZE, SIZE))
        mean[keep] = shrunk.location_ * scale
        precision[np.ix_(keep, keep)] = shrunk.precision_ / np.outer(scale, scale)
        means.append(mean)
        precisions.append(precision)
    partial = SiteReference(
        used=used,
        class_means=np.stack(means),
        precisions=np.stack(precisions),
        thresholds=np.zeros(n_classes),
        quantile=np.asarray(quantile, dtype=np.float64),
        revision=np.asarray(float(REVISION)),
    )
    calib_y = np.asarray(calib_y, dtype=np.intp)
    scores = partial.score(np.asarray(calib, dtype=np.float64), calib_y)
    pooled = float(np.quantile(scores, quantile))
    thresholds = np.array(
        [
            float(np.quantile(scores[calib_y == c], quantile))
            if (calib_y == c).sum() >= MIN_PER_CLASS
            else pooled
            for c in range(n_classes)
        ]
    )
    return SiteReference(
        used=partial.used,
        class_means=partial.class_means,
        precisions=partial.precisions,
        thresholds=thresholds,
        quantile=partial.quantile,
        revision=partial.revision,
    )


def fit_acquisition(
    sourced: SourcedData,
    rows: NDArray[np.int64],
    split: Split,
    cache_dir: Path | None,
    log: Callable[[str], None],
) -> tuple[SiteReference, dict[str, Any]]:
    """The bundle's acquisition reference from the training rows' FIT and CALIBRATION parts, and what it
    says of the TEST part and of the evaluation-only images, per site (for the report and the manifest)."""
    paths = sourced.paths
    fingerprints = fingerprint_files(paths, cache_dir=cache_dir, workers=2, log=log)
    y = sourced.y
    fit, calib, test = rows[split.fit], rows[split.calib], rows[split.test]
    reference = fit_site_reference(fingerprints[fit], y[fit], fingerprints[calib], y[calib], len(CLASSES))
    sites = np.asarray(sourced.sites)
    rates: dict[str, Any] = {}
    for name, part in (("test", test), ("evaluation", sourced.evaluation_rows)):
        if not len(part):
            continue
        atypical = reference.atypical(reference.score(fingerprints[part], y[part]), y[part])
        rates[name] = {
            str(site): float(atypical[sites[part] == site].mean())
            for site in dict.fromkeys(sites[part].tolist())
        }
    info = {
        "revision": REVISION,
        "quantile": float(reference.quantile),
        "compared": list(COMPARED),
        "fit": "fit part (true classes); thresholds from the calibration part",
        "thresholds": {c: float(t) for c, t in zip(CLASSES, reference.thresholds, strict=True)},
        "atypical_rate_true_class": rates,
    }
    return reference, info
