"""``hemascope evaluate``: score a model bundle on folder-per-class datasets, pooled, per dataset and per
site (laboratory), with the referral the classifier service would apply."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.errors import FailedPrecondition
from hemascope.training import calibration as cal
from hemascope.training.crosssource import referral_metrics
from hemascope.training.metrics import classification_metrics, clustering_metrics
from hemascope.training.sets import embed_set, preprocessing_name
from hemascope.training.sitemetrics import per_site
from hemascope.training.sources import DatasetSpec, SourcedSet, scan_sources


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


def referral_flags(
    bundle: LoadedBundle, name: str, scaled: NDArray[np.float64], proba: NDArray[np.float64]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Low-confidence and out-of-distribution flags, exactly as the classifier service sets them."""
    entry = bundle.models[name].entry
    low = proba.max(axis=1) < entry.abstain_threshold
    scores = bundle.ood_scores(scaled, proba.argmax(axis=1)) if entry.ood_threshold > 0 else None
    ood = np.zeros(len(proba), dtype=np.bool_) if scores is None else scores > entry.ood_threshold
    return low, ood


def embed_scan(
    bundle: LoadedBundle, scan: SourcedSet, *, address: str | None = None, progress: bool = True
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The class index of every scanned image and its embedding by the bundle's own backbone and
    preprocessing, scaled as the bundle's models expect (rows in ``scan.records`` order)."""
    classes = tuple(bundle.manifest.classes)
    vectors = _embed(bundle, [r.path for r in scan.records], address, progress)
    y = np.asarray([classes.index(r.label) for r in scan.records], dtype=np.int64)
    return y, bundle.scale(vectors)


def trained_on(bundle: LoadedBundle, specs: Sequence[DatasetSpec]) -> list[str]:
    """Names of ``specs`` datasets whose roots the bundle was trained on (their scores are not held out)."""
    sources = bundle.manifest.training.get("sources") or []
    roots = {Path(s["root"]).resolve() for s in sources if s.get("role") == "train"}
    return [s.name for s in specs if s.role == "train" and s.root.resolve() in roots]


def evaluate_bundle(
    bundle_path: Path,
    specs: Sequence[DatasetSpec],
    *,
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Embeds every dataset with the bundle's backbone and scores every model: pooled (``models``), per
    dataset and per site (``per_dataset`` / ``per_site``: model -> name -> metrics)."""
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    classes = tuple(manifest.classes)
    scan = scan_sources(specs, classes)
    y, scaled = embed_scan(bundle, scan, address=address, progress=progress)
    malignant = [classes.index(c) for c in manifest.malignant_classes]
    sites = [r.site for r in scan.records]
    datasets = [r.dataset for r in scan.records]
    models: dict[str, Any] = {}
    by_site: dict[str, Any] = {}
    by_dataset: dict[str, Any] = {}
    for name, model in bundle.models.items():
        proba = model.proba(scaled)
        metrics = classification_metrics(y, proba, classes, malignant)
        if model.entry.kind == "kmeans":
            metrics.update(clustering_metrics(y, model.estimator.predict(scaled).astype(np.int64)))
        metrics["abstain"] = cal.risk_coverage(y, proba, model.entry.abstain_threshold)
        low, ood = referral_flags(bundle, name, scaled, proba)
        metrics["referral"] = {
            "ood_available": bundle.ood is not None and model.entry.ood_threshold > 0,
            **referral_metrics(y, proba, low, ood),
        }
        models[name] = metrics
        by_site[name] = per_site(y, proba, sites, classes, malignant, low | ood)
        by_dataset[name] = per_site(y, proba, datasets, classes, malignant, low | ood)
    return {
        "bundle": {
            "path": str(bundle_path),
            "version": manifest.bundle_version,
            "backbone": manifest.backbone,
        },
        "data": {
            "root": ", ".join(str(s.root) for s in specs),
            "images": len(scan.records),
            "datasets": scan.describe(),
            "counts": scan.counts(),
            "unknown_folders": [str(p) for p in scan.unknown_folders],
            "trained_on": trained_on(bundle, specs),
        },
        "models": models,
        "per_site": by_site,
        "per_dataset": by_dataset,
    }


def summary_line(result: dict[str, Any]) -> dict[str, Any]:
    """The per-model figures of the ``--json`` line: pooled, then per site."""
    keys = ("accuracy", "macro_f1", "myeloblast_sensitivity", "myeloblast_specificity", "referred")
    return {
        name: {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "roc_auc": m["roc_auc"],
            "malignant_sensitivity": m["malignant"]["sensitivity"],
            "malignant_specificity": m["malignant"]["specificity"],
            "coverage_with_referral": m["referral"]["coverage"],
            "per_site": {site: {k: s[k] for k in keys} for site, s in result["per_site"][name].items()},
        }
        for name, m in result["models"].items()
    }
