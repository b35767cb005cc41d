"""``hemascope evaluate``: score a model bundle on any folder-per-class dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hemascope.bundle import load_bundle
from hemascope.datasets import scan_dataset
from hemascope.errors import FailedPrecondition
from hemascope.training import calibration as cal
from hemascope.training.embed import embed_paths
from hemascope.training.metrics import classification_metrics, clustering_metrics


def evaluate_bundle(
    bundle_path: Path, data: Path, *, address: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Embeds ``data`` with the bundle's backbone and scores every model of the bundle on it."""
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    classes = tuple(manifest.classes)
    scan = scan_dataset(data, classes=classes)
    if not scan.records:
        raise FileNotFoundError(f"no images of the classes {list(classes)} under {data}")
    emb = embed_paths(
        [r.path for r in scan.records], backbone=manifest.backbone, address=address, progress=progress
    )
    if (emb.weights_hash, emb.preprocessing) != (manifest.weights_hash, manifest.preprocessing):
        raise FailedPrecondition(
            f"the embeddings ({emb.backbone} {emb.weights_hash[:12]}, {emb.preprocessing}) are not those "
            f"the bundle was trained on ({manifest.backbone} {manifest.weights_hash[:12]}, "
            f"{manifest.preprocessing})"
        )
    y = np.asarray([classes.index(r.label) for r in scan.records], dtype=np.int64)
    malignant = [classes.index(c) for c in manifest.malignant_classes]
    scaled = bundle.scale(emb.vectors)
    models: dict[str, Any] = {}
    for name, model in bundle.models.items():
        proba = model.proba(scaled)
        metrics = classification_metrics(y, proba, classes, malignant)
        if model.entry.kind == "kmeans":
            metrics.update(clustering_metrics(y, model.estimator.predict(scaled).astype(np.int64)))
        metrics["abstain"] = cal.risk_coverage(y, proba, model.entry.abstain_threshold)
        models[name] = metrics
    return {
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


def summary_line(result: dict[str, Any]) -> dict[str, Any]:
    """The per-model figures of the ``--json`` line."""
    return {
        name: {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "roc_auc": m["roc_auc"],
            "malignant_sensitivity": m["malignant"]["sensitivity"],
            "malignant_specificity": m["malignant"]["specificity"],
        }
        for name, m in result["models"].items()
    }
