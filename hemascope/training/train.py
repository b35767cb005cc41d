"""``hemascope train classifiers``: datasets of several sites -> embeddings -> the study's models -> metrics
(pooled, per site, leave-one-source-out), bundle, report."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import save_bundle
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.errors import FailedPrecondition
from hemascope.training.augment import DEFAULT_AUGMENT, embed_augmented
from hemascope.training.duplicates import DuplicateReport
from hemascope.training.fit import FitSettings, TrainingData, fit_scaler_and_ood, train_one
from hemascope.training.loso import FoldEmbedder, loso_folds, run_loso
from hemascope.training.models import MODELS
from hemascope.training.multisource import SourcedData, load_sourced
from hemascope.training.ood import DEFAULT_COMPONENTS, DEFAULT_QUANTILE
from hemascope.training.sets import default_preprocessing, embed_set, embedder
from hemascope.training.site_reference import fit_acquisition
from hemascope.training.sources import DatasetSpec

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass
class TrainConfig:
    sources: Sequence[DatasetSpec]
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
    #: duplicates already found among every image of the sources (by the audit), in scan order
    duplicates: DuplicateReport | None = None
    #: preprocessing option (hemascope.imaging.preprocess); None: the backbone's or the default
    preprocessing: str | None = None
    #: augmented copies of each FIT-part image added to the fit data (0: none)
    augment: int = 0
    #: OOD model: PCA components, and the quantile of calibration scores used as threshold
    ood_components: int = DEFAULT_COMPONENTS
    ood_quantile: float = DEFAULT_QUANTILE
    #: leave-one-source-out evaluation of the same pipeline (every training site held out in turn)
    loso: bool = True
    #: models scored in the leave-one-source-out folds (None: every trained model)
    loso_models: Sequence[str] | None = None
    #: where fine-tuning caches front features and per-fold embeddings
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "hemascope" / "finetune")

    def settings(self) -> FitSettings:
        return FitSettings(
            cv_folds=self.cv_folds,
            seed=self.seed,
            target_coverage=self.target_coverage,
            ood_components=self.ood_components,
            ood_quantile=self.ood_quantile,
            log=self.log,
        )


def _fingerprint(hashes: Sequence[str], labels: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for content, label in sorted(zip(hashes, labels, strict=True)):
        digest.update(f"{content}:{label}\n".encode())
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("scikit-learn", "xgboost-cpu", "skops", "numpy", "onnxruntime", "hemascope", "torch")
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def _preprocessing(cfg: TrainConfig) -> str | None:
    """The option asked for, else the one a fine-tuned backbone was trained on (else the default)."""
    if cfg.preprocessing or not cfg.backbone:
        return cfg.preprocessing
    from services.feature.backbones import get_spec

    return get_spec(cfg.backbone).trained_on


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


def _bundled_backbone(name: str) -> Path | None:
    """The folder of a fine-tuned backbone (with its ``backbone.json``), or None for an ImageNet one."""
    from services.feature.backbones import backbone_dir, get_spec

    return backbone_dir() / name if get_spec(name).weights == "bundled" else None


def _images_seen_by(name: str) -> Path | None:
    """The folder whose ``backbone.json`` lists the images backbone ``name`` was fine-tuned on: its own, or
    for a quantized backbone its source's (whose images it inherits, plus its calibration images)."""
    from services.feature.backbones import get_spec

    spec = get_spec(name)
    if spec.weights == "quantized" and spec.source is not None:
        return _bundled_backbone(spec.source)
    return _bundled_backbone(name)


def check_no_leakage(
    backbone: str, folder: Path, paths: Sequence[Path], data: TrainingData, train_rows: IntArray
) -> dict[str, Any]:
    """FailedPrecondition when the fine-tuned backbone has seen a calibration or test image of this split
    (images are compared by the SHA-256 of their files, as ``backbone.json`` lists them)."""
    from hemascope.files import file_sha256
    from hemascope.training.finetune.recipe import read_metadata

    seen = set(read_metadata(folder)["trained_on"])
    hashes = {int(i): file_sha256(paths[i]) for i in train_rows}
    leaked = [
        part
        for part, index in (("calibration", data.split.calib), ("test", data.split.test))
        if any(hashes[int(train_rows[i])] in seen for i in index)
    ]
    if leaked:
        raise FailedPrecondition(
            f"backbone {backbone} was fine-tuned on images of this run's {' and '.join(leaked)} part: its "
            "scores would be inflated. Train the classifiers with the sources and seed the backbone was "
            "trained with (see its MODEL_CARD.md), or fine-tune it again with `hemascope train backbone`."
        )
    fit_seen = sum(hashes[int(train_rows[i])] in seen for i in data.split.fit)
    return {"fine_tuned_on": len(seen), "fit_images_seen_by_backbone": fit_seen, "leakage": "none"}


def _fold_embedder(
    cfg: TrainConfig, sourced: SourcedData, vectors: FloatArray, folder: Path | None
) -> tuple[FoldEmbedder, str]:
    """Frozen backbones: the same embeddings every fold. Fine-tuned ones: the recipe re-run per fold."""
    if folder is None:
        return (lambda _fold: vectors), "the same frozen embeddings in every fold"
    from hemascope.files import file_sha256
    from hemascope.training.finetune.features import cache_key, front_features
    from hemascope.training.finetune.network import load_embedding, split_network
    from hemascope.training.finetune.recipe import Recipe, RecipeEmbedder, read_metadata
    from services.feature.backbones import weights_file

    recipe = Recipe.from_json(read_metadata(folder)["recipe"])
    base = weights_file(recipe.base, None)
    base_hash = file_sha256(base)
    paths = sourced.paths

    def features() -> NDArray[np.float16]:
        front, _ = split_network(load_embedding(base), recipe.plan.split)
        return front_features(
            paths, recipe.plan, front, base_hash, cfg.cache_dir, log=cfg.log, until=recipe.finetune.split
        )

    embed = RecipeEmbedder(
        features,
        cache_key(paths, recipe.plan, base_hash),
        sourced.y,
        sourced.sites,
        recipe,
        base,
        cfg.cache_dir / "folds",
        len(CLASSES),
        cfg.log,
    )
    return (
        embed,
        "a backbone fine-tuned per fold with the shipped backbone's recipe, without the held-out site",
    )


def _loso(cfg: TrainConfig, sourced: SourcedData, vectors: FloatArray, folder: Path | None) -> dict[str, Any]:
    models = [m for m in (cfg.loso_models or cfg.models) if m in cfg.models]
    folds = loso_folds(sourced.y, sourced.sites, sourced.groups, sourced.training, seed=cfg.seed)
    embed, how = _fold_embedder(cfg, sourced, vectors, folder)
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    return {
        "embeddings": how,
        "models": models,
        "folds": run_loso(embed, sourced.y, folds, CLASSES, malignant, models, log=cfg.log, seed=cfg.seed),
    }


def train_classifiers(cfg: TrainConfig) -> dict[str, Any]:
    """Runs the whole pipeline; writes the bundle to ``cfg.out`` and returns the results dict."""
    sourced = load_sourced(cfg.sources, duplicates=cfg.duplicates, progress=cfg.progress, log=cfg.log)
    scan, paths = sourced.scan, sourced.paths
    labels = [r.label for r in scan.records]
    started = time.perf_counter()
    preprocessing = _preprocessing(cfg)
    where = {"backbone": cfg.backbone, "address": cfg.address, "preprocessing": preprocessing}
    emb = embed_set(paths, progress=cfg.progress, **where)
    embed_seconds = time.perf_counter() - started
    vectors = emb.vectors.astype(np.float64)
    rows, evaluation = sourced.train_rows, sourced.evaluation_rows
    split = sourced.split(cfg.seed)
    sites = sourced.sites
    data = TrainingData(
        vectors[rows],
        sourced.y[rows],
        sourced.groups[rows],
        split,
        sites=[sites[i] for i in rows],
        strata=sourced.strata(rows),
    )
    if len(evaluation):
        data.probe_x, data.probe_y = vectors[evaluation], sourced.y[evaluation]
        data.probe_sites = [f"{scan.records[i].dataset}:{sites[i]}" for i in evaluation]
    folder = _bundled_backbone(emb.backbone)
    seen_by = _images_seen_by(emb.backbone)
    leakage = check_no_leakage(emb.backbone, seen_by, paths, data, rows) if seen_by is not None else None
    augment_info = _add_augmented(data, [paths[i] for i in rows], cfg, where)
    settings = cfg.settings()
    scaler, ood = fit_scaler_and_ood(data, settings)
    site, acquisition_info = fit_acquisition(sourced, rows, split, cfg.cache_dir, cfg.log)
    results: dict[str, Any] = {"models": {}, "augmentation": augment_info, "acquisition": acquisition_info}
    trained = {}
    for name in cfg.models:
        cfg.log(f"training {name} ({cfg.cv_folds}-fold CV, then the final fit)")
        results["models"][name], trained[name] = train_one(MODELS[name], data, scaler, ood, settings)
        cfg.log(f"  {name}: test macro-F1 {results['models'][name]['test']['macro_f1']:.4f}")
    if cfg.loso and len(scan.training_sites()) > 1:
        results["loso"] = _loso(cfg, sourced, vectors, folder)
    dups = sourced.duplicates
    merged = np.bincount(dups.group_of)
    results.update(
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": cfg.command,
            "dataset": {
                "root": ", ".join(str(s.root) for s in cfg.sources),
                "sources": scan.describe(),
                "sites": scan.sites,
                "training_sites": scan.training_sites(),
                "images": len(rows),
                "evaluation_images": len(evaluation),
                "counts": scan.counts(),
                "unknown_folders": [str(p) for p in scan.unknown_folders],
                "fingerprint": _fingerprint([emb.content_hashes[i] for i in rows], [labels[i] for i in rows]),
                "patients": len({r.patient for r in scan.records if r.patient}),
                "groups": len(np.unique(sourced.groups[rows])),
            },
            "duplicates": {
                "exact_groups": len(dups.exact_groups),
                "near_pairs": len(dups.near_pairs),
                "merged_groups": dups.merged_groups,
                "images_in_merged_groups": int(merged[merged > 1].sum()),
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
                "stratified_by": "class and site",
                "backbone_leakage_check": leakage,
            },
            "embedding": {
                "backbone": emb.backbone,
                "weights_hash": emb.weights_hash,
                "preprocessing": emb.preprocessing,
                "preprocessing_option": preprocessing or default_preprocessing(),
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
            "sources": results["dataset"]["sources"],
            "training_sites": results["dataset"]["training_sites"],
            "split": results["split"],
            "duplicates": results["duplicates"],
            "preprocessing_option": results["embedding"]["preprocessing_option"],
            "augmentation": augment_info,
            "ood": {
                "components": int(ood.components.shape[0]),
                "quantile": cfg.ood_quantile,
                "fit": "fit part",
            },
            "acquisition": acquisition_info,
        },
        "created": results["created"],
    }
    save_bundle(cfg.out, manifest_fields, scaler, trained, ood, site)
    results["bundle"] = {"path": str(cfg.out), "version": manifest_fields["bundle_version"]}
    return results
