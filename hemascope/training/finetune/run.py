"""``hemascope train backbone``: fine-tune EfficientNet-Lite0 on the FIT part of a multi-source split,
with a leave-one-source-out check of the recipe, and write the weights, ``backbone.json`` and a model card.

The split is the one ``hemascope train classifiers`` makes with the same sources and seed, so the backbone
never sees the calibration or test images of the bundle trained on it. The leave-one-source-out folds
fine-tune a fresh backbone each (the shipped one has seen every site) and are scored with the classical
models on its embeddings, next to the frozen ImageNet backbone on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.files import file_sha256
from hemascope.training.finetune.features import cache_key, front_features
from hemascope.training.finetune.loop import embed_cached, fine_tune
from hemascope.training.finetune.network import load_embedding, save_weights, split_network
from hemascope.training.finetune.recipe import Recipe, RecipeEmbedder, write_metadata
from hemascope.training.loso import loso_folds, run_loso
from hemascope.training.multisource import load_sourced
from hemascope.training.sources import DatasetSpec
from services.feature.backbones import BUNDLED_WEIGHTS, weights_file


@dataclass
class BackboneTrainConfig:
    sources: Sequence[DatasetSpec]
    out: Path
    recipe: Recipe
    name: str = "efficientnet_lite0_blood"
    loso: bool = True
    loso_models: Sequence[str] = ("logistic_regression",)
    seed: int = 50
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "hemascope" / "finetune")
    workers: int = 1
    threads: int = 0
    progress: bool = False
    log: Callable[[str], None] = print
    command: str = ""


def train_backbone(cfg: BackboneTrainConfig) -> dict[str, Any]:
    """Runs the whole recipe; writes ``cfg.out/weights.pth``, ``backbone.json`` and ``MODEL_CARD.md``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    sourced = load_sourced(cfg.sources, progress=cfg.progress, log=cfg.log)
    recipe, paths = cfg.recipe, sourced.paths
    base = weights_file(recipe.base, None)
    base_hash = file_sha256(base)
    front, _ = split_network(load_embedding(base), recipe.plan.split)
    cfg.log(f"front features of {len(paths)} images x {recipe.plan.copies + 1} inputs (cached)")
    features = front_features(
        paths,
        recipe.plan,
        front,
        base_hash,
        cfg.cache_dir,
        workers=cfg.workers,
        log=cfg.log,
        until=recipe.finetune.split,
    )
    features_seconds = time.perf_counter() - started
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    results: dict[str, Any] = {}
    if cfg.loso and len(sourced.scan.training_sites()) > 1:
        folds = loso_folds(sourced.y, sourced.sites, sourced.groups, sourced.training, seed=cfg.seed)
        frozen = embed_cached(features, load_embedding(base), recipe.finetune.split)
        cfg.log("leave-one-source-out, frozen ImageNet backbone on the same inputs")
        results["loso_frozen"] = run_loso(
            lambda _fold: frozen, sourced.y, folds, CLASSES, malignant, cfg.loso_models, seed=cfg.seed
        )
        embed = RecipeEmbedder(
            lambda: features,
            cache_key(paths, recipe.plan, base_hash),
            sourced.y,
            sourced.sites,
            recipe,
            base,
            cfg.cache_dir / "folds",
            len(CLASSES),
            cfg.log,
        )
        results["loso"] = run_loso(
            embed, sourced.y, folds, CLASSES, malignant, cfg.loso_models, log=cfg.log, seed=cfg.seed
        )
        results["loso_histories"] = embed.histories
    rows = sourced.train_rows
    split = sourced.split(cfg.seed)
    fit = rows[split.fit]
    cfg.log(f"fine-tuning the backbone on the fit part ({len(fit)} images)")
    result = fine_tune(
        features, sourced.y, sourced.sites, fit, load_embedding(base), len(CLASSES), recipe.finetune, cfg.log
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    save_weights(result.embedding, cfg.out / BUNDLED_WEIGHTS)
    hashes = [file_sha256(paths[i]) for i in fit]
    fit_sites = [sourced.sites[i] for i in fit]
    extra = {
        "name": cfg.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": cfg.command,
        "weights_sha256": file_sha256(cfg.out / BUNDLED_WEIGHTS),
        "base_weights_sha256": base_hash,
        "sources": sourced.scan.describe(),
        "split": {
            "seed": cfg.seed,
            "fit": len(split.fit),
            "calib": len(split.calib),
            "test": len(split.test),
            "fit_per_site": {s: fit_sites.count(s) for s in dict.fromkeys(fit_sites)},
            "stratified_by": "class and site",
            "grouped_by": "patient and duplicates",
        },
        "history": result.history,
        "seconds": {
            "front_features": features_seconds,
            "fine_tune": result.seconds,
            "total": time.perf_counter() - started,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **results,
    }
    write_metadata(cfg.out, recipe, hashes, extra)
    from hemascope.training.finetune.card import write_backbone_card

    write_backbone_card(cfg.out, {"recipe": recipe.describe(), **extra})
    return extra
