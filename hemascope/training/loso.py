"""Leave-one-source-out: train on every site but one, score the held-out site's cells.

The criterion that chooses preprocessing, backbone and recipe: a hospital's own microscope is a site the
models have never seen, and same-source scores do not predict what happens there.

Per fold, the training images of the other sites are split (grouped, stratified by class and site) into a
FIT part (the backbone's fine-tuning, the scaler, the models, the OOD model) and a CALIBRATION part (the
temperatures, abstain and OOD thresholds, never seen by a fine-tuned backbone either); every image of the
held-out site, evaluation-only sets (the Barcelona probe) included, is scored. Embeddings come from a
:data:`FoldEmbedder`: the same matrix every fold for a frozen backbone, a backbone fine-tuned on the fold's
FIT part for a recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import StandardScaler

from hemascope.bundle import apply_temperature
from hemascope.training import calibration as cal
from hemascope.training.groups import strata
from hemascope.training.models import MODELS, fit_model
from hemascope.training.ood import DEFAULT_COMPONENTS, DEFAULT_QUANTILE, fit_ood, ood_threshold
from hemascope.training.sitemetrics import site_metrics
from hemascope.training.split import grouped_folds

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Fold:
    held_out: str
    fit: IntArray
    calib: IntArray
    test: IntArray


#: ``embed(fold) -> N x D`` embeddings of every image, for the fold's training (``fold.fit``) backbone.
FoldEmbedder = Callable[[Fold], NDArray[np.floating[Any]]]


def loso_folds(
    y: IntArray,
    sites: Sequence[str],
    groups: IntArray,
    training: NDArray[np.bool_],
    *,
    seed: int = 50,
    calib_fraction: float = 0.1,
) -> list[Fold]:
    """One fold per training site: its images (``training`` or not) are the test part."""
    site_array = np.asarray(sites)
    site_list = list(sites)
    folds = []
    for site in dict.fromkeys(site_array[training].tolist()):
        rest = np.flatnonzero(training & (site_array != site)).astype(np.int64)
        split = next(
            grouped_folds(
                strata(y[rest], [site_list[int(i)] for i in rest]),
                groups[rest],
                round(1 / calib_fraction),
                seed,
            )
        )
        fit, calib = rest[split[0]], rest[split[1]]
        folds.append(Fold(site, fit, calib, np.flatnonzero(site_array == site).astype(np.int64)))
    return folds


def _proba(name: str, fitted: Any, x: FloatArray, n_classes: int) -> FloatArray:
    from hemascope.bundle import LoadedModel, ModelEntry

    spec = MODELS[name]
    entry = ModelEntry(spec.name, spec.kind, "", "", "", extra=fitted.extra)
    return LoadedModel(entry, fitted.estimator, n_classes).raw_proba(x)


def evaluate_fold(
    x: FloatArray,
    y: IntArray,
    fold: Fold,
    classes: Sequence[str],
    malignant: Sequence[int],
    models: Sequence[str],
    *,
    target_coverage: float = 0.95,
    seed: int = 50,
) -> dict[str, Any]:
    """Every model fitted on ``fold.fit``, calibrated on ``fold.calib``, scored on ``fold.test``."""
    n_classes = len(classes)
    scaler = StandardScaler().fit(x[fold.fit])
    x_fit, x_calib, x_test = (scaler.transform(x[i]) for i in (fold.fit, fold.calib, fold.test))
    ood = fit_ood(x_fit, y[fold.fit], n_classes, components=DEFAULT_COMPONENTS, seed=seed)
    out: dict[str, Any] = {}
    for name in models:
        started = time.perf_counter()
        fitted = fit_model(MODELS[name], x_fit, y[fold.fit], n_classes)
        calib_raw = _proba(name, fitted, x_calib, n_classes)
        temperature = cal.fit_temperature(y[fold.calib], calib_raw)
        calib_p = apply_temperature(calib_raw, temperature)
        test_p = apply_temperature(_proba(name, fitted, x_test, n_classes), temperature)
        abstain = cal.abstain_threshold(calib_p, target_coverage)
        ood_thr = ood_threshold(ood.score(x_calib, calib_p.argmax(axis=1)), DEFAULT_QUANTILE)
        referred = (test_p.max(axis=1) < abstain) | (ood.score(x_test, test_p.argmax(axis=1)) > ood_thr)
        metrics = site_metrics(y[fold.test], test_p, classes, malignant, referred)
        metrics["seconds"] = time.perf_counter() - started
        out[name] = metrics
    return out


def run_loso(
    embed: FoldEmbedder,
    y: IntArray,
    folds: Sequence[Fold],
    classes: Sequence[str],
    malignant: Sequence[int],
    models: Sequence[str],
    *,
    log: Callable[[str], None] | None = None,
    seed: int = 50,
) -> dict[str, Any]:
    """``{held-out site: {"n_fit", "n_calib", "n_test", "embed_seconds", "models": {name: metrics}}}``."""
    results: dict[str, Any] = {}
    for fold in folds:
        if log is not None:
            log(f"leave-one-source-out: {fold.held_out} held out ({len(fold.test)} images)")
        started = time.perf_counter()
        x = np.asarray(embed(fold), dtype=np.float64)
        embed_seconds = time.perf_counter() - started
        results[fold.held_out] = {
            "n_fit": len(fold.fit),
            "n_calib": len(fold.calib),
            "n_test": len(fold.test),
            "embed_seconds": embed_seconds,
            "models": evaluate_fold(x, y, fold, classes, malignant, models, seed=seed),
        }
    return results
