"""A fine-tuned backbone's recipe (inputs, re-acquisition, training settings) and what it was trained on,
stored as ``backbone.json`` beside its weights; and the per-fold embedder that re-runs the recipe.

A fine-tuned backbone has seen its training images: scoring it on them, or on a site it was trained on as
if it were new, would be leakage. So ``backbone.json`` lists the SHA-256 of every image it was fine-tuned
on (``hemascope train classifiers`` refuses a split whose calibration or test part contains one), and
leave-one-source-out folds never reuse the shipped backbone: :class:`RecipeEmbedder` fine-tunes a fresh
one on each fold's FIT part with the same recipe (cached by fold, so a second command reuses it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.training.acquisition import AcquisitionConfig
from hemascope.training.finetune.features import VariantPlan
from hemascope.training.finetune.loop import FineTuneConfig
from hemascope.training.loso import Fold

METADATA = "backbone.json"
FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    plan: VariantPlan
    finetune: FineTuneConfig
    #: the backbone whose weights it starts from (its front stays frozen)
    base: str = "efficientnet_lite0"

    def __post_init__(self) -> None:
        if self.finetune.split < self.plan.split:
            raise ValueError(
                f"the front is cached up to block {self.plan.split}: it cannot fine-tune from block "
                f"{self.finetune.split}"
            )

    def describe(self) -> dict[str, Any]:
        return {"base": self.base, "plan": self.plan.describe(), "finetune": self.finetune.describe()}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode()).hexdigest()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipe:
        plan = data["plan"]
        ranges: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in plan["acquisition_ranges"].items()
        }
        return cls(
            plan=VariantPlan(
                option=plan["option"],
                copies=plan["copies"],
                seed=plan["seed"],
                acquisition=AcquisitionConfig(**ranges),
                split=plan["split_block"],
            ),
            finetune=FineTuneConfig(**data["finetune"]),
            base=data.get("base", "efficientnet_lite0"),
        )


def write_metadata(folder: Path, recipe: Recipe, trained_on: Sequence[str], extra: dict[str, Any]) -> Path:
    """``backbone.json``: the recipe, the sorted SHA-256 of the images fine-tuned on, and ``extra``."""
    path = folder / METADATA
    payload = {"format": FORMAT, "recipe": recipe.describe(), "trained_on": sorted(trained_on), **extra}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def read_metadata(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / METADATA).read_text())
    return data


class RecipeEmbedder:
    """``embed(fold)``: fine-tunes a fresh backbone with ``recipe`` on ``fold.fit`` and embeds every image
    (their served inputs) with it; cached per (features, recipe, fold) under ``cache_dir``. ``features``
    returns the inputs of the recipe's first fine-tuned block (``front_features(..., until=...)``)."""

    def __init__(
        self,
        features: Callable[[], NDArray[np.float16]],
        features_key: str,
        y: NDArray[np.int64],
        sites: Sequence[str],
        recipe: Recipe,
        base_weights: Path,
        cache_dir: Path,
        n_classes: int,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._features = features
        self._loaded: NDArray[np.float16] | None = None
        self.features_key, self.y, self.sites = features_key, y, list(sites)
        self.recipe, self.base_weights, self.cache_dir = recipe, base_weights, cache_dir
        self.n_classes, self.log = n_classes, log
        self.histories: dict[str, list[dict[str, float]]] = {}

    def features(self) -> NDArray[np.float16]:
        """The inputs of the recipe's first fine-tuned block for every image and variant (loaded once)."""
        if self._loaded is None:
            self._loaded = self._features()
        return self._loaded

    def _path(self, fold: Fold) -> Path:
        digest = hashlib.sha256(
            json.dumps([self.features_key, self.recipe.key(), FORMAT]).encode() + fold.fit.tobytes()
        ).hexdigest()[:24]
        return self.cache_dir / f"fold-{digest}.npz"

    def __call__(self, fold: Fold) -> NDArray[np.float32]:
        from hemascope.training.finetune.loop import embed_cached, fine_tune
        from hemascope.training.finetune.network import load_embedding

        path = self._path(fold)
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                self.histories[fold.held_out] = json.loads(str(stored["history"]))
                return np.asarray(stored["embeddings"], dtype=np.float32)
        if self.log is not None:
            self.log(f"fine-tuning a backbone without {fold.held_out} ({len(fold.fit)} images)")
        result = fine_tune(
            self.features(),
            self.y,
            self.sites,
            fold.fit,
            load_embedding(self.base_weights),
            self.n_classes,
            self.recipe.finetune,
            self.log,
        )
        embeddings = embed_cached(self.features(), result.embedding, self.recipe.finetune.split)
        self.histories[fold.held_out] = result.history
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        with partial.open("wb") as handle:
            np.savez(handle, embeddings=embeddings, history=np.array(json.dumps(result.history)))
        partial.replace(path)
        return embeddings
