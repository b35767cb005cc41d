"""``hemascope study sites``: candidate pipelines compared by leave-one-source-out; the default is the one
that does best at laboratories it was not trained on.

A candidate is ``frozen:<option>`` (the ImageNet backbone, the study's method, with a preprocessing option)
or ``finetuned:<option>`` (EfficientNet-Lite0 fine-tuned with the acquisition recipe on that option's
inputs, a fresh backbone per fold). Every candidate is scored on the same folds with the same classical
models. The choice rule, fixed before looking: the highest mean over held-out sites of logistic
regression's macro-F1; ties broken by the mean myeloblast sensitivity. Same-site scores are not used to
choose: every candidate reaches them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.training.finetune.loop import FineTuneConfig
from hemascope.training.loso import FoldEmbedder, loso_folds, run_loso
from hemascope.training.multisource import SourcedData, load_sourced
from hemascope.training.sources import DatasetSpec

CRITERION = "logistic_regression"
#: The study's frozen ImageNet backbone (any preprocessing option).
FROZEN_BACKBONE = "efficientnet_lite0"


@dataclass
class SiteStudyConfig:
    sources: Sequence[DatasetSpec]
    out: Path
    candidates: Sequence[str]
    models: Sequence[str] = (CRITERION,)
    seed: int = 50
    copies: int = 5
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "hemascope" / "finetune")
    log: Callable[[str], None] = print
    command: str = ""


def parse_candidate(candidate: str) -> tuple[str, str]:
    from hemascope.errors import InvalidArgument
    from hemascope.imaging.preprocess import get_preprocessing

    kind, _, option = candidate.partition(":")
    if kind not in ("frozen", "finetuned") or not option:
        raise InvalidArgument(f"candidate {candidate!r}: expected frozen:<option> or finetuned:<option>")
    get_preprocessing(option)
    return kind, option


def frozen_embeddings(sourced: SourcedData, option: str, cfg: SiteStudyConfig) -> NDArray[np.float32]:
    from hemascope.imaging.preprocess import get_preprocessing
    from hemascope.training.sets import embed_set

    paths = sourced.paths
    key = hashlib.sha256(
        json.dumps([get_preprocessing(option).version, *map(str, paths)]).encode()
    ).hexdigest()
    target = cfg.cache_dir / "frozen" / f"{option}-{key[:20]}.npy"
    if target.is_file():
        stored: NDArray[np.float32] = np.load(target)
        return stored
    cfg.log(f"embedding {len(paths)} images with the frozen backbone, {option}")
    vectors = embed_set(paths, backbone=FROZEN_BACKBONE, preprocessing=option).vectors
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, vectors)
    return vectors


def _finetuned(sourced: SourcedData, option: str, cfg: SiteStudyConfig) -> FoldEmbedder:
    from hemascope.files import file_sha256
    from hemascope.training.finetune.features import VariantPlan, cache_key, front_features
    from hemascope.training.finetune.network import load_embedding, split_network
    from hemascope.training.finetune.recipe import Recipe, RecipeEmbedder
    from services.feature.backbones import weights_file

    recipe = Recipe(VariantPlan(option, copies=cfg.copies, seed=cfg.seed), cfg.finetune)
    base = weights_file(recipe.base, None)
    base_hash = file_sha256(base)
    paths = sourced.paths

    def features() -> NDArray[np.float16]:
        front, _ = split_network(load_embedding(base), recipe.plan.split)
        return front_features(
            paths, recipe.plan, front, base_hash, cfg.cache_dir, log=cfg.log, until=recipe.finetune.split
        )

    return RecipeEmbedder(
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


def _frozen_embedder(vectors: NDArray[np.float32]) -> FoldEmbedder:
    def embed(_fold: Any) -> NDArray[np.float32]:
        return vectors

    return embed


def summarise(folds: dict[str, Any], model: str = CRITERION) -> dict[str, float | None]:
    """Mean and worst macro-F1 over held-out sites, mean myeloblast sensitivity (where a site has
    myeloblasts), worst false-blast rate, mean ECE."""
    metrics = [fold["models"][model] for fold in folds.values() if model in fold["models"]]
    sens = [m["myeloblast_sensitivity"] for m in metrics if m["myeloblast_sensitivity"] is not None]
    fpr = [m["myeloblast_fpr"] for m in metrics if m["myeloblast_fpr"] is not None]
    return {
        "mean_macro_f1": float(np.mean([m["macro_f1"] for m in metrics])) if metrics else None,
        "worst_macro_f1": float(np.min([m["macro_f1"] for m in metrics])) if metrics else None,
        "mean_myeloblast_sensitivity": float(np.mean(sens)) if sens else None,
        "worst_false_blast_rate": float(np.max(fpr)) if fpr else None,
        "mean_ece": float(np.mean([m["ece"] for m in metrics])) if metrics else None,
    }


def choose(summaries: dict[str, dict[str, float | None]]) -> str:
    return max(
        summaries,
        key=lambda c: (
            summaries[c]["mean_macro_f1"] or 0.0,
            summaries[c]["mean_myeloblast_sensitivity"] or 0.0,
        ),
    )


def run_site_study(cfg: SiteStudyConfig) -> dict[str, Any]:
    """Scores every candidate leave-one-source-out; writes ``study.json`` and ``study.md`` to ``cfg.out``."""
    from hemascope.training.sitestudy_report import write

    sourced = load_sourced(cfg.sources, log=cfg.log)
    folds = loso_folds(sourced.y, sourced.sites, sourced.groups, sourced.training, seed=cfg.seed)
    malignant = [CLASSES.index(c) for c in MALIGNANT_CLASSES]
    results: dict[str, Any] = {}
    for candidate in cfg.candidates:
        kind, option = parse_candidate(candidate)
        cfg.log(f"candidate {candidate}")
        embed = (
            _frozen_embedder(frozen_embeddings(sourced, option, cfg))
            if kind == "frozen"
            else _finetuned(sourced, option, cfg)
        )
        results[candidate] = run_loso(
            embed, sourced.y, folds, CLASSES, malignant, cfg.models, log=cfg.log, seed=cfg.seed
        )
    summaries = {c: summarise(r) for c, r in results.items()}
    study = {
        "command": cfg.command,
        "sources": sourced.scan.describe(),
        "seed": cfg.seed,
        "models": list(cfg.models),
        "finetune": cfg.finetune.describe(),
        "copies": cfg.copies,
        "folds": {f.held_out: {"fit": len(f.fit), "calib": len(f.calib), "test": len(f.test)} for f in folds},
        "results": results,
        "summary": summaries,
        "rule": f"highest mean held-out macro-F1 of {CRITERION}, then mean myeloblast sensitivity",
        "chosen": choose(summaries),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "study.json").write_text(json.dumps(study, indent=1))
    write(study, cfg.out)
    return study
