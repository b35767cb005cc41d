"""``hemascope evaluate``: score a model bundle on any folder-per-class dataset (and a cross-source probe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.datasets import scan_dataset
from hemascope.errors import FailedPrecondition
from hemascope.training import calibration as cal
from hemascope.training.crosssource import cross_source_metrics, probe_records, referral_metrics
from hemascope.training.metrics import classification_metrics, clustering_metrics
from hemascope.training.sets import embed_set, preprocessing_name


def _embed(bundle: LoadedBundle, paths: list[Path], address: str | None, progress: bool) -> NDArray[Any]:
    manifest = bundle.manifest
    emb = embed_set(
        paths,
        backbone=manifest.backbone,
        address=address,
        preprocessing=preprocessing_name(manifest.preprocessing),
        progress=progress,
    )
    if (emb.weights_hash, emb.preprocessing) != (manifest.weights_hash, manifest.preprocessing):
        raise FailedPrecondition(
            f"the embeddings ({emb.backbone} {emb.weights_hash[:12]}, {emb.preprocessing}) are not those "
            f"the bundle was trained on ({manifest.backbone} {manifest.weights_hash[:12]}, "
            f"{manifest.preprocessing})"
        )
    return emb.vectors


def _flags(
    bundle: LoadedBundle, name: str, scaled: NDArray[np.float64], proba: NDArray[np.float64]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Low-confidence and out-of-distribution flags, exactly as the classifier service sets them."""
    entry = bundle.models[name].entry
    low = proba.max(axis=1) < entry.abstain_threshold
    scores = bundle.ood_scores(scaled, proba.argmax(axis=1)) if entry.ood_threshold > 0 else None
    ood = np.zeros(len(proba), dtype=np.bool_) if scores is None else scores > entry.ood_threshold
    return low, ood


def _probe(bundle: LoadedBundle, probe: Path, address: str | None, progress: bool) -> dict[str, Any]:
    classes = tuple(bundle.manifest.classes)
    records = probe_records(probe, classes)
    scaled = bundle.scale(_embed(bundle, [r.path for r in records], address, progress))
    y = np.asarray([classes.index(r.label) for r in records], dtype=np.int64)
    models = {}
    for name, model in bundle.models.items():
        proba = model.proba(scaled)
        models[name] = cross_source_metrics(y, proba, classes, *_flags(bundle, name, scaled, proba))
    return {"root": str(probe), "images": len(records), "models": models}


def evaluate_bundle(
    bundle_path: Path,
    data: Path,
    *,
    address: str | None = None,
    progress: bool = True,
    probe: Path | None = None,
) -> dict[str, Any]:
    """Embeds ``data`` with the bundle's backbone and scores every model of the bundle on it.

    With ``probe`` (a folder-per-class cross-source set, e.g. the Barcelona neutrophils), also reports
    what the probe's cells are called and how many of the errors are referred.
    """
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    classes = tuple(manifest.classes)
    scan = scan_dataset(data, classes=classes)
    if not scan.records:
        raise FileNotFoundError(f"no images of the classes {list(classes)} under {data}")
    vectors = _embed(bundle, [r.path for r in scan.records], address, progress)
    y = np.asarray([classes.index(r.label) for r in scan.records], dtype=np.int64)
    malignant = [classes.index(c) for c in manifest.malignant_classes]
    scaled = bundle.scale(vectors)
    models: dict[str, Any] = {}
    for name, model in bundle.models.items():
        proba = model.proba(scaled)
        metrics = classification_metrics(y, proba, classes, malignant)
        if model.entry.kind == "kmeans":
            metrics.update(clustering_metrics(y, model.estimator.predict(scaled).astype(np.int64)))
        metrics["abstain"] = cal.risk_coverage(y, proba, model.entry.abstain_threshold)
        metrics["referral"] = {
            "ood_available": bundle.ood is not None and model.entry.ood_threshold > 0,
            **referral_metrics(y, proba, *_flags(bundle, name, scaled, proba)),
        }
        models[name] = metrics
    result: dict[str, Any] = {
        "bundle": {
            "path": str(bundle_path),
            "version": manifest.bundle_version,
            "backbone": manifest.backbone,
        },
        "data": {
            "root": str(data),
            "images": len(scan.records),
            "counts": {f"{s}/{c}".lstrip("/"): n for (s, c), n in sorted(scan.counts().items())},
            "unknown_folders": [str(p) for p in scan.unknown_folders],
            "skipped_files": len(scan.skipped_files),
        },
        "models": models,
    }
    if probe is not None:
        result["probe"] = _probe(bundle, probe, address, progress)
    return result


def summary_line(result: dict[str, Any]) -> dict[str, Any]:
    """The per-model figures of the ``--json`` line."""
    probe = result.get("probe", {}).get("models", {})
    return {
        name: {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "roc_auc": m["roc_auc"],
            "malignant_sensitivity": m["malignant"]["sensitivity"],
            "malignant_specificity": m["malignant"]["specificity"],
            "coverage_with_referral": m["referral"]["coverage"],
            **(
                {
                    "probe_accuracy": probe[name]["accuracy"],
                    "probe_referred": probe[name]["referred"],
                    "probe_errors_referred": probe[name]["errors_referred"],
                }
                if name in probe
                else {}
            ),
        }
        for name, m in result["models"].items()
    }
