"""Fitting and scoring one model of a training run: grouped CV, the final fit, temperature, abstain and OOD
thresholds, held-out metrics (pooled and per site) and the evaluation-only sets."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import StandardScaler

from hemascope.bundle import OodModel, TrainedModel, apply_temperature
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.training import calibration as cal
from hemascope.training.crosssource import cross_source_metrics, referral_metrics
from hemascope.training.metrics import (
    classification_metrics,
    clustering_metrics,
    roc_curves,
    summarise_folds,
)
from hemascope.training.models import ModelSpec, fit_model
from hemascope.training.ood import DEFAULT_COMPONENTS, DEFAULT_QUANTILE, fit_ood, ood_threshold
from hemascope.training.sitemetrics import per_site
from hemascope.training.split import Split, grouped_folds

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class FitSettings:
    """What every model of a run shares."""

    cv_folds: int = 5
    seed: int = 50
    target_coverage: float = 0.95
    ood_components: int = DEFAULT_COMPONENTS
    ood_quantile: float = DEFAULT_QUANTILE
    log: Callable[[str], None] = print


@dataclass
class TrainingData:
    x: FloatArray
    y: IntArray
    groups: IntArray
    split: Split
    #: the site (laboratory) of each row of ``x``
    sites: Sequence[str] = ()
    #: (class, site) stratum of each row (what splits and CV stratify on); ``y`` when empty
    strata: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    info: dict[str, Any] = field(default_factory=dict)
    #: augmented copies of FIT-part images (rows) and the index of each one's source image in ``x``
    aug_x: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    aug_source: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: evaluation-only images (never fitted on), their classes and sites
    probe_x: FloatArray | None = None
    probe_y: IntArray | None = None
    probe_sites: Sequence[str] = ()

    def fit_rows(self, index: IntArray) -> tuple[FloatArray, IntArray]:
        """The rows ``index`` plus the augmented copies of those of them that have copies."""
        if not len(self.aug_source):
            return self.x[index], self.y[index]
        copies = np.isin(self.aug_source, index)
        return (
            np.concatenate([self.x[index], self.aug_x[copies]]),
            np.concatenate([self.y[index], self.y[self.aug_source[copies]]]),
        )

    def stratum(self) -> IntArray:
        return self.strata if len(self.strata) else self.y

    def sites_at(self, index: IntArray) -> list[str]:
        return [self.sites[i] for i in index] if len(self.sites) else ["all"] * len(index)


def model_proba(spec: ModelSpec, fitted: Any, x: FloatArray) -> FloatArray:
    from hemascope.bundle import LoadedModel, ModelEntry

    entry = ModelEntry(spec.name, spec.kind, "", "", "", extra=fitted.extra)
    return LoadedModel(entry, fitted.estimator, len(CLASSES)).raw_proba(x)


def _evaluate(spec: ModelSpec, fitted: Any, x: FloatArray, y: IntArray, proba: FloatArray) -> dict[str, Any]:
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    metrics = classification_metrics(y, proba, CLASSES, malignant)
    if spec.kind == "kmeans":
        metrics.update(clustering_metrics(y, fitted.estimator.predict(x).astype(np.int64)))
    return metrics


def _cross_validate(spec: ModelSpec, data: TrainingData, cfg: FitSettings) -> dict[str, Any]:
    train = data.split.train
    folds = []
    for fit_rel, val_rel in grouped_folds(data.stratum()[train], data.groups[train], cfg.cv_folds, cfg.seed):
        fit_idx, val_idx = train[fit_rel], train[val_rel]
        x_fit, y_fit = data.fit_rows(fit_idx)
        scaler = StandardScaler().fit(x_fit)
        fitted = fit_model(spec, scaler.transform(x_fit), y_fit, len(CLASSES))
        x_val = scaler.transform(data.x[val_idx])
        folds.append(_evaluate(spec, fitted, x_val, data.y[val_idx], model_proba(spec, fitted, x_val)))
    return summarise_folds(folds)


def _referral(
    spec: ModelSpec, fitted: Any, data: TrainingData, parts: dict[str, Any], ood: OodModel, cfg: FitSettings
) -> tuple[dict[str, Any], float]:
    """OOD threshold from the calibration part; referral and per-site metrics on the test part and on the
    evaluation-only sets."""
    s = data.split
    calib_scores = ood.score(parts["x_calib"], parts["calib_p"].argmax(axis=1))
    threshold = ood_threshold(calib_scores, cfg.ood_quantile)
    test_p = parts["test_p"]
    low = test_p.max(axis=1) < parts["abstain_threshold"]
    flagged = ood.score(parts["x_test"], test_p.argmax(axis=1)) > threshold
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    out: dict[str, Any] = {
        "ood_threshold": threshold,
        "ood_quantile": cfg.ood_quantile,
        "test": referral_metrics(data.y[s.test], test_p, low, flagged),
        "test_per_site": per_site(
            data.y[s.test], test_p, data.sites_at(s.test), CLASSES, malignant, low | flagged
        ),
    }
    if data.probe_x is not None and data.probe_y is not None and len(data.probe_y):
        x_probe = parts["scaler"].transform(data.probe_x)
        probe_p = apply_temperature(model_proba(spec, fitted, x_probe), parts["temperature"])
        low_p = probe_p.max(axis=1) < parts["abstain_threshold"]
        ood_p = ood.score(x_probe, probe_p.argmax(axis=1)) > threshold
        out["probe"] = cross_source_metrics(data.probe_y, probe_p, CLASSES, low_p, ood_p)
        sites = list(data.probe_sites) or ["evaluation"] * len(data.probe_y)
        out["probe_per_site"] = per_site(data.probe_y, probe_p, sites, CLASSES, malignant, low_p | ood_p)
    return out, threshold


def train_one(
    spec: ModelSpec, data: TrainingData, scaler: StandardScaler, ood: OodModel, cfg: FitSettings
) -> tuple[dict[str, Any], TrainedModel]:
    s = data.split
    started = time.perf_counter()
    cv = _cross_validate(spec, data, cfg) if cfg.cv_folds > 1 else {}
    cv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    x_fit, y_fit = data.fit_rows(s.fit)
    fitted = fit_model(spec, scaler.transform(x_fit), y_fit, len(CLASSES))
    fit_seconds = time.perf_counter() - started
    x_calib, x_test = scaler.transform(data.x[s.calib]), scaler.transform(data.x[s.test])
    raw_calib, raw_test = model_proba(spec, fitted, x_calib), model_proba(spec, fitted, x_test)
    temperature = cal.fit_temperature(data.y[s.calib], raw_calib)
    calib_p = apply_temperature(raw_calib, temperature)
    test_p = apply_temperature(raw_test, temperature)
    threshold = cal.abstain_threshold(calib_p, cfg.target_coverage)
    y_test = data.y[s.test]
    test = _evaluate(spec, fitted, x_test, y_test, test_p)
    result: dict[str, Any] = {
        "description": spec.description,
        "fit_seconds": fit_seconds,
        "cv_seconds": cv_seconds,
        "cv": cv,
        "test": test,
        "calibration": {
            "method": "temperature",
            "temperature": temperature,
            "before": cal.reliability(y_test, raw_test),
            "after": cal.reliability(y_test, test_p),
        },
        "abstain": {"target_coverage": cfg.target_coverage, **cal.risk_coverage(y_test, test_p, threshold)},
        "roc": roc_curves(y_test, test_p, CLASSES),
    }
    parts = {
        "x_calib": x_calib,
        "x_test": x_test,
        "calib_p": calib_p,
        "test_p": test_p,
        "abstain_threshold": threshold,
        "temperature": temperature,
        "scaler": scaler,
    }
    result["referral"], ood_thr = _referral(spec, fitted, data, parts, ood, cfg)
    if spec.name == "xgboost":
        importance = np.asarray(fitted.estimator.feature_importances_)
        top = np.argsort(-importance)[:20]
        result["feature_importance"] = [{"feature": int(i), "gain": float(importance[i])} for i in top]
    summary = {
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "roc_auc": test["roc_auc"] or 0.0,
        "malignant_sensitivity": test["malignant"]["sensitivity"] or 0.0,
        "malignant_specificity": test["malignant"]["specificity"] or 0.0,
        "ece": result["calibration"]["after"]["ece"],
        "coverage_with_referral": result["referral"]["test"]["coverage"],
    }
    if "probe" in result["referral"]:
        summary["probe_accuracy"] = result["referral"]["probe"]["accuracy"]
        summary["probe_errors_referred"] = result["referral"]["probe"]["errors_referred"] or 0.0
    trained = TrainedModel(
        fitted.estimator, spec.kind, f"{spec.name}-1", temperature, threshold, summary, fitted.extra, ood_thr
    )
    return result, trained


def fit_scaler_and_ood(data: TrainingData, cfg: FitSettings) -> tuple[StandardScaler, OodModel]:
    """The scaler and the OOD model every model shares, both fitted on the FIT part (with its copies)."""
    x_fit, y_fit = data.fit_rows(data.split.fit)
    scaler = StandardScaler().fit(x_fit)
    ood = fit_ood(scaler.transform(x_fit), y_fit, len(CLASSES), components=cfg.ood_components, seed=cfg.seed)
    return scaler, ood
