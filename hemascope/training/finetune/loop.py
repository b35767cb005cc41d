"""The fine-tuning loop over cached front features: the back and a linear head, class-and-site balanced.

Each step draws images with probability proportional to ``1 / n(class, site)`` among the training images
(so a class seen at two sites is learnt from both equally, and no site dominates by volume), and for each
image its served input with probability ``original_p``, else one of its re-acquired copies. Loss: cross
entropy with label smoothing; AdamW with a cosine schedule and a short warm-up. Batch-norm statistics stay
those of ImageNet by default (``bn="frozen"``): a few thousand images from three sites are too few to
re-estimate them without learning the sites' statistics. Deterministic for a seed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from hemascope.training.finetune.network import TRAIN_FROM, split_network, training_device
from services.feature.torch_modules import EmbeddingModule

EMBEDDING_DIM = 1280


@dataclass(frozen=True)
class FineTuneConfig:
    """The recipe (recorded in the backbone's model card)."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.05
    #: probability of training on an image's served input rather than one of its re-acquired copies
    original_p: float = 0.2
    #: images drawn per epoch; 0: as many as there are training images
    samples_per_epoch: int = 0
    bn: Literal["frozen", "train"] = "frozen"
    #: the first fine-tuned block; the features given to :func:`fine_tune` are this block's inputs
    split: int = TRAIN_FROM
    seed: int = 50

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FineTuneResult:
    embedding: EmbeddingModule
    history: list[dict[str, float]]
    seconds: float


def balanced_weights(labels: Sequence[int], sites: Sequence[str]) -> NDArray[np.float64]:
    """Per-image sampling weights ``1 / n(class, site)``, normalised to sum to 1."""
    cells = list(zip(labels, sites, strict=True))
    counts = Counter(cells)
    weights = np.array([1.0 / counts[c] for c in cells], dtype=np.float64)
    out: NDArray[np.float64] = weights / weights.sum()
    return out


def _set_bn(module: nn.Module, mode: str) -> None:
    module.train()
    if mode == "frozen":
        for child in module.modules():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                child.eval()


def fine_tune(
    features: NDArray[np.float16],
    labels: NDArray[np.int64],
    sites: Sequence[str],
    train: NDArray[np.int64],
    embedding: EmbeddingModule,
    n_classes: int,
    cfg: FineTuneConfig = FineTuneConfig(),
    log: Callable[[str], None] | None = None,
) -> FineTuneResult:
    """Fine-tunes ``embedding``'s back in place on the rows ``train`` of ``features`` (inputs of block
    ``cfg.split``, see :func:`hemascope.training.finetune.features.advance`)."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = training_device()
    embedding.to(device)
    _, back = split_network(embedding, cfg.split)
    head = nn.Linear(EMBEDDING_DIM, n_classes).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": list(back.parameters()), "lr": cfg.lr},
            {"params": list(head.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    bases = [group["lr"] for group in optimiser.param_groups]
    weights = balanced_weights(labels[train].tolist(), [sites[i] for i in train])
    per_epoch = cfg.samples_per_epoch or len(train)
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, round(cfg.warmup_fraction * total))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    copies = features.shape[1] - 1
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        _set_bn(back, cfg.bn)
        head.train()
        chosen = train[rng.choice(len(train), size=per_epoch, replace=True, p=weights)]
        variant = np.where(
            (rng.random(per_epoch) < cfg.original_p) | (copies == 0),
            0,
            rng.integers(1, max(2, copies + 1), size=per_epoch),
        )
        seen, loss_sum, correct = 0, 0.0, 0
        for start in range(0, per_epoch, cfg.batch_size):
            rows, cols = chosen[start : start + cfg.batch_size], variant[start : start + cfg.batch_size]
            x = torch.from_numpy(features[rows, cols].astype(np.float32)).to(device)
            y = torch.from_numpy(labels[rows]).to(device)
            scale = (
                (step + 1) / warmup
                if step < warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            )
            for group, base in zip(optimiser.param_groups, bases, strict=True):
                group["lr"] = base * scale
            logits = head(back(x))
            loss = loss_fn(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            seen += len(rows)
            loss_sum += float(loss.detach()) * len(rows)
            correct += int((logits.argmax(1) == y).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "accuracy": correct / seen})
        if log is not None:
            log(
                f"  epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / seen:.4f}, accuracy {correct / seen:.4f}"
            )
    embedding.to("cpu").eval()
    for parameter in embedding.parameters():
        parameter.requires_grad_(False)
    return FineTuneResult(embedding, history, time.perf_counter() - started)


def embed_cached(
    features: NDArray[np.float16], embedding: EmbeddingModule, split: int = TRAIN_FROM, variant: int = 0
) -> NDArray[np.float32]:
    """Embeddings of the cached front features' ``variant`` (0: the served input) through the back."""
    device = training_device()
    _, back = split_network(embedding, split)
    back.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), 256):
            x = torch.from_numpy(features[start : start + 256, variant].astype(np.float32)).to(device)
            out.append(back(x).cpu().numpy())
    back.to("cpu")
    for parameter in embedding.parameters():
        parameter.requires_grad_(False)
    return np.concatenate(out).astype(np.float32)
