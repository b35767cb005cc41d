"""``hemascope train classifiers``: dataset -> embeddings -> the study's models -> metrics, bundle, report."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import StandardScaler

from hemascope.bundle import OodModel, TrainedModel, apply_temperature, save_bundle
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES, scan_dataset
from hemascope.training import calibration as cal
from hemascope.training.augment import DEFAULT_AUGMENT, embed_augmented
from hemascope.training.crosssource import cross_source_metrics, probe_records, referral_metrics
from hemascope.training.metrics import (
    classification_metrics,
    clustering_metrics,
    roc_curves,
    summarise_folds,
)
from hemascope.training.models import MODELS, ModelSpec, fit_model
from hemascope.training.ood import DEFAULT_COMPONENTS, DEFAULT_QUANTILE, fit_ood, ood_threshold
from hemascope.training.sets import default_preprocessing, embed_set, embedder
from hemascope.training.split import Split, grouped_folds, grouped_split

if TYPE_CHECKING:
    from hemascope.training.duplicates import DuplicateReport

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass
class TrainConfig:
    data: Path
    out: Path
    backbone: str | None = None
    address: str | None = None
    models: Sequence[str] = tuple(MODELS)
    cv_folds: int = 5
    seed: int = 50
    target_coverage: float = 0.95
    progress: bool = True
    log: Callable[[str], None] = print
    command: str = ""
    #: duplicates already found for this dataset (by the audit), in scan order; found here when None
    duplicates: DuplicateReport | None = None
    #: preprocessing option (hemascope.imaging.preprocess); None: the default
    preprocessing: str | None = None
    #: augmented copies of each FIT-part image added to the fit data (0: none)
    augment: int = 0
    #: cross-source probe (folder-per-class, evaluation only); None: not evaluated
    probe: Path | None = None
    #: OOD model: PCA components, and the quantile of calibration scores used as threshold
    ood_components: int = DEFAULT_COMPONENTS
    ood_quantile: float = DEFAULT_QUANTILE


@dataclass
class TrainingData:
    x: FloatArray
    y: IntArray
    groups: IntArray
    split: Split
    info: dict[str, Any] = field(default_factory=dict)
    #: augmented copies of FIT-part images (rows) and the index of each one's source image in ``x``
    aug_x: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    aug_source: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    probe_x: FloatArray | None = None
    probe_y: IntArray | None = None

    def fit_rows(self, index: IntArray) -> tuple[FloatArray, IntArray]:
        """The rows ``index`` plus the augmented copies of those of them that have copies."""
        if not len(self.aug_source):
            return self.x[index], self.y[index]
        copies = np.isin(self.aug_source, index)
        return (
            np.concatenate([self.x[index], self.aug_x[copies]]),
            np.concatenate([self.y[index], self.y[self.aug_source[copies]]]),
        )


def _proba(spec: ModelSpec, fitted: Any, x: FloatArray) -> FloatArray:
    from hemascope.bundle import LoadedModel, ModelEntry

    entry = ModelEntry(spec.name, spec.kind, "", "", "", extra=fitted.extra)
    return LoadedModel(entry, fitted.estimator, len(CLASSES)).raw_proba(x)


def _evaluate(spec: ModelSpec, fitted: Any, x: FloatArray, y: IntArray, proba: FloatArray) -> dict[str, Any]:
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    metrics = classification_metrics(y, proba, CLASSES, malignant)
    if spec.kind == "kmeans":
        metrics.update(clustering_metrics(y, fitted.estimator.predict(x).astype(np.int64)))
    return metrics


def _cross_validate(spec: ModelSpec, data: TrainingData, cfg: TrainConfig) -> dict[str, Any]:
    train = data.split.train
    folds = []
    for fit_rel, val_rel in grouped_folds(data.y[train], data.groups[train], cfg.cv_folds, cfg.seed):
        fit_idx, val_idx = train[fit_rel], train[val_rel]
        x_fit, y_fit = data.fit_rows(fit_idx)
        scaler = StandardScaler().fit(x_fit)
        fitted = fit_model(spec, scaler.transform(x_fit), y_fit, len(CLASSES))
        x_val = scaler.transform(data.x[val_idx])
        folds.append(_evaluate(spec, fitted, x_val, data.y[val_idx], _proba(spec, fitted, x_val)))
    return summarise_folds(folds)


def _referral(
    spec: ModelSpec, fitted: Any, data: TrainingData, parts: dict[str, Any], ood: OodModel, cfg: TrainConfig
) -> tuple[dict[str, Any], float]:
    """OOD threshold from the calibration part; referral on the test part and on the probe."""
    s = data.split
    calib_scores = ood.score(parts["x_calib"], parts["calib_p"].argmax(axis=1))
    threshold = ood_threshold(calib_scores, cfg.ood_quantile)
    test_p = parts["test_p"]
    low = test_p.max(axis=1) < parts["abstain_threshold"]
    flagged = ood.score(parts["x_test"], test_p.argmax(axis=1)) > threshold
    out: dict[str, Any] = {
        "ood_threshold": threshold,
        "ood_quantile": cfg.ood_quantile,
        "test": referral_metrics(data.y[s.test], test_p, low, flagged),
    }
    if data.probe_x is not None and data.probe_y is not None:
        x_probe = parts["scaler"].transform(data.probe_x)
        probe_p = apply_temperature(_proba(spec, fitted, x_probe), parts["temperature"])
        low_p = probe_p.max(axis=1) < parts["abstain_threshold"]
        ood_p = ood.score(x_probe, probe_p.argmax(axis=1)) > threshold
        out["probe"] = cross_source_metrics(data.probe_y, probe_p, CLASSES, low_p, ood_p)
    return out, threshold


def train_one(
    spec: ModelSpec, data: TrainingData, scaler: StandardScaler, ood: OodModel, cfg: TrainConfig
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
    raw_calib, raw_test = _proba(spec, fitted, x_calib), _proba(spec, fitted, x_test)
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


def _fingerprint(hashes: Sequence[str], labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for content, label in sorted(zip(hashes, labels, strict=True)):
        digest.update(f"{content}:{label}\n".encode())
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("scikit-learn", "xgboost-cpu", "skops", "numpy", "onnxruntime", "hemascope")
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def fit_scaler_and_ood(data: TrainingData, cfg: TrainConfig) -> tuple[StandardScaler, OodModel]:
    """The scaler and the OOD model every model shares, both fitted on the FIT part (with its copies)."""
    x_fit, y_fit = data.fit_rows(data.split.fit)
    scaler = StandardScaler().fit(x_fit)
    ood = fit_ood(scaler.transform(x_fit), y_fit, len(CLASSES), components=cfg.ood_components, seed=cfg.seed)
    return scaler, ood


def _add_augmented(
    data: TrainingData, paths: Sequence[Path], cfg: TrainConfig, where: dict[str, Any]
) -> dict[str, Any]:
    """Embeds ``cfg.augment`` perturbed copies of each FIT-part image (never calibration or test)."""
    info: dict[str, Any] = {"copies": cfg.augment, "version": DEFAULT_AUGMENT.version, "seed": cfg.seed}
    if cfg.augment < 1:
        return info
    fit = data.split.fit
    cfg.log(f"embedding {cfg.augment} augmented copies of each of the {len(fit)} fit-part images")
    started = time.perf_counter()
    vectors, sources = embed_augmented(
        [paths[i] for i in fit], cfg.augment, embedder(**where), seed=cfg.seed, log=cfg.log
    )
    data.aug_x, data.aug_source = vectors.astype(np.float64), fit[sources]
    return {**info, "images": len(sources), "seconds": time.perf_counter() - started}


def _add_probe(data: TrainingData, cfg: TrainConfig, where: dict[str, Any]) -> dict[str, Any] | None:
    if cfg.probe is None:
        return None
    records = probe_records(cfg.probe, CLASSES)
    cfg.log(f"embedding the cross-source probe ({len(records)} images, evaluation only)")
    emb = embed_set([r.path for r in records], progress=cfg.progress, **where)
    data.probe_x = emb.vectors.astype(np.float64)
    data.probe_y = np.asarray([CLASSES.index(r.label) for r in records], dtype=np.int64)
    counts = {c: int((data.probe_y == i).sum()) for i, c in enumerate(CLASSES) if (data.probe_y == i).any()}
    return {"root": str(cfg.probe), "images": len(records), "counts": counts}


def train_classifiers(cfg: TrainConfig) -> dict[str, Any]:
    """Runs the whole pipeline; writes the bundle to ``cfg.out`` and returns the results dict."""
    from hemascope.training.duplicates import find_duplicates

    scan = scan_dataset(cfg.data)
    paths = [r.path for r in scan.records]
    labels = [r.label for r in scan.records]
    y = np.asarray([CLASSES.index(label) for label in labels], dtype=np.int64)
    dups = cfg.duplicates
    if dups is None or len(dups.group_of) != len(paths):
        cfg.log(f"{len(paths)} images in {len(set(labels))} classes; finding duplicates")
        dups = find_duplicates(paths, progress=cfg.progress)
    started = time.perf_counter()
    where = {"backbone": cfg.backbone, "address": cfg.address, "preprocessing": cfg.preprocessing}
    emb = embed_set(paths, progress=cfg.progress, **where)
    embed_seconds = time.perf_counter() - started
    split = grouped_split(y, dups.group_of, seed=cfg.seed)
    data = TrainingData(emb.vectors.astype(np.float64), y, dups.group_of.astype(np.int64), split)
    augment_info = _add_augmented(data, paths, cfg, where)
    probe_info = _add_probe(data, cfg, where)
    scaler, ood = fit_scaler_and_ood(data, cfg)
    results: dict[str, Any] = {"models": {}, "augmentation": augment_info, "probe": probe_info}
    trained = {}
    for name in cfg.models:
        cfg.log(f"training {name} ({cfg.cv_folds}-fold CV, then the final fit)")
        results["models"][name], trained[name] = train_one(MODELS[name], data, scaler, ood, cfg)
        cfg.log(f"  {name}: test macro-F1 {results['models'][name]['test']['macro_f1']:.4f}")
    merged_images = int(
        sum((dups.group_of == g).sum() for g in np.unique(dups.group_of) if (dups.group_of == g).sum() > 1)
    )
    results.update(
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": cfg.command,
            "dataset": {
                "root": str(cfg.data),
                "images": len(paths),
                "counts": {f"{split}/{label}": n for (split, label), n in sorted(scan.counts().items())},
                "unknown_folders": [str(p) for p in scan.unknown_folders],
                "fingerprint": _fingerprint(emb.content_hashes, labels),
            },
            "duplicates": {
                "exact_groups": len(dups.exact_groups),
                "near_pairs": len(dups.near_pairs),
                "merged_groups": dups.merged_groups,
                "images_in_merged_groups": merged_images,
            },
            "split": {
                "seed": cfg.seed,
                "train": len(split.train),
                "test": len(split.test),
                "fit": len(split.fit),
                "fit_augmented": len(data.aug_source),
                "calib": len(split.calib),
                "cv_folds": cfg.cv_folds,
                "grouped": True,
            },
            "embedding": {
                "backbone": emb.backbone,
                "weights_hash": emb.weights_hash,
                "preprocessing": emb.preprocessing,
                "preprocessing_option": cfg.preprocessing or default_preprocessing(),
                "dimension": int(emb.vectors.shape[1]),
                "seconds": embed_seconds,
                "cache_hits": emb.cache_hits,
            },
            "classes": list(CLASSES),
            "malignant_classes": list(MALIGNANT_CLASSES),
        }
    )
    manifest_fields = {
        "bundle_version": f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{results['dataset']['fingerprint'][:8]}",
        "backbone": emb.backbone,
        "weights_hash": emb.weights_hash,
        "dimension": int(emb.vectors.shape[1]),
        "preprocessing": emb.preprocessing,
        "classes": list(CLASSES),
        "malignant_classes": list(MALIGNANT_CLASSES),
        "data_fingerprint": results["dataset"]["fingerprint"],
        "library_versions": _library_versions(),
        "training": {
            "command": cfg.command,
            "split": results["split"],
            "duplicates": results["duplicates"],
            "preprocessing_option": results["embedding"]["preprocessing_option"],
            "augmentation": augment_info,
            "ood": {
                "components": int(ood.components.shape[0]),
                "quantile": cfg.ood_quantile,
                "fit": "fit part",
            },
        },
        "created": results["created"],
    }
    save_bundle(cfg.out, manifest_fields, scaler, trained, ood)
    results["bundle"] = {"path": str(cfg.out), "version": manifest_fields["bundle_version"]}
    return results
