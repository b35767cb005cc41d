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

from hemascope.bundle import TrainedModel, apply_temperature, save_bundle
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES, scan_dataset
from hemascope.training import calibration as cal
from hemascope.training.embed import embed_paths
from hemascope.training.metrics import (
    classification_metrics,
    clustering_metrics,
    roc_curves,
    summarise_folds,
)
from hemascope.training.models import MODELS, ModelSpec, fit_model
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


@dataclass
class _Data:
    x: FloatArray
    y: IntArray
    groups: IntArray
    split: Split
    info: dict[str, Any] = field(default_factory=dict)


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


def _cross_validate(spec: ModelSpec, data: _Data, cfg: TrainConfig) -> dict[str, Any]:
    train = data.split.train
    folds = []
    for fit_rel, val_rel in grouped_folds(data.y[train], data.groups[train], cfg.cv_folds, cfg.seed):
        fit_idx, val_idx = train[fit_rel], train[val_rel]
        scaler = StandardScaler().fit(data.x[fit_idx])
        fitted = fit_model(spec, scaler.transform(data.x[fit_idx]), data.y[fit_idx], len(CLASSES))
        x_val = scaler.transform(data.x[val_idx])
        folds.append(_evaluate(spec, fitted, x_val, data.y[val_idx], _proba(spec, fitted, x_val)))
    return summarise_folds(folds)


def _train_one(
    spec: ModelSpec, data: _Data, scaler: StandardScaler, cfg: TrainConfig
) -> tuple[dict[str, Any], TrainedModel]:
    s = data.split
    started = time.perf_counter()
    cv = _cross_validate(spec, data, cfg) if cfg.cv_folds > 1 else {}
    cv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fitted = fit_model(spec, scaler.transform(data.x[s.fit]), data.y[s.fit], len(CLASSES))
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
    }
    trained = TrainedModel(
        fitted.estimator, spec.kind, f"{spec.name}-1", temperature, threshold, summary, fitted.extra
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
    emb = embed_paths(paths, backbone=cfg.backbone, address=cfg.address, progress=cfg.progress)
    embed_seconds = time.perf_counter() - started
    split = grouped_split(y, dups.group_of, seed=cfg.seed)
    data = _Data(emb.vectors.astype(np.float64), y, dups.group_of.astype(np.int64), split)
    scaler = StandardScaler().fit(data.x[split.fit])
    results: dict[str, Any] = {"models": {}}
    trained = {}
    for name in cfg.models:
        cfg.log(f"training {name} ({cfg.cv_folds}-fold CV, then the final fit)")
        results["models"][name], trained[name] = _train_one(MODELS[name], data, scaler, cfg)
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
                "calib": len(split.calib),
                "cv_folds": cfg.cv_folds,
                "grouped": True,
            },
            "embedding": {
                "backbone": emb.backbone,
                "weights_hash": emb.weights_hash,
                "preprocessing": emb.preprocessing,
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
        "training": {"command": cfg.command, "split": results["split"], "duplicates": results["duplicates"]},
        "created": results["created"],
    }
    save_bundle(cfg.out, manifest_fields, scaler, trained)
    results["bundle"] = {"path": str(cfg.out), "version": manifest_fields["bundle_version"]}
    return results
