"""Model-randomisation sanity check (Adebayo et al. 2018): maps must change when the weights are randomised.

Cascading from the top: the classifier head first, then the backbone's head convolution, then more and more
of its last blocks. Each stage's maps are compared with the trained model's maps of the same images and
class by Spearman rank correlation over the map's cells. A method whose maps survive randomisation of the
weights that make the decision explains the image, not the model.

- Logistic regression (Grad-CAM): the head's weights and bias are redrawn from Gaussians of their own
  standard deviation.
- Other models (Ablation-CAM): the model itself cannot be redrawn, so its input features are permuted at
  random (equivalent to permuting the weights on its inputs).
- Backbone layers: every convolution's weights redrawn from a Gaussian of the layer's own standard
  deviation (batch-norm statistics kept).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import spearmanr
from torch import nn

from hemascope.bundle import LoadedBundle
from services.explain.cam import GRADIENT_METHODS, CamExplainer
from services.explain.heads import LogisticHead, ProbabilityHead
from services.explain.network import EfficientNetBody, SplitBackbone

#: Cascade stages: (name, number of the backbone's last blocks randomised; -1: none, 0: head conv only).
STAGES: tuple[tuple[str, int], ...] = (
    ("classifier head", -1),
    ("+ head conv", 0),
    ("+ last block", 1),
    ("+ last 3 blocks", 3),
    ("+ last 6 blocks", 6),
)


class _PermutedFeatures(nn.Module):
    def __init__(self, inner: nn.Module, permutation: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.permutation = permutation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(features[:, self.permutation])
        return out


def randomised_head(bundle: LoadedBundle, model: str, method: str, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    if method in GRADIENT_METHODS:
        head = copy.deepcopy(LogisticHead(bundle, model))
        for buffer in (head.weight, head.bias):
            buffer.copy_(torch.randn(buffer.shape, generator=generator) * buffer.std())
        return head
    permutation = torch.randperm(bundle.manifest.dimension, generator=generator)
    return _PermutedFeatures(ProbabilityHead(bundle, model), permutation)


def randomised_backbone(backbone: SplitBackbone, blocks: int, seed: int) -> SplitBackbone:
    """A copy of ``backbone`` with the head conv and its last ``blocks`` blocks' convolutions redrawn."""
    copied = copy.deepcopy(backbone)
    if blocks < 0:
        return copied
    body = copied.body
    if not isinstance(body, EfficientNetBody):  # pragma: no cover - the default backbone is EfficientNet
        raise TypeError("the cascade is defined for EfficientNet bodies")
    net = body.net
    modules: list[nn.Module] = [net._conv_head, *list(net._blocks)[len(net._blocks) - blocks :]]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    std = layer.weight.std()
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
    return copied


class _FixedHeadExplainer(CamExplainer):
    """A :class:`CamExplainer` whose every model is explained through ``head`` (a randomised classifier)."""

    def __init__(self, backbone: SplitBackbone, bundle: LoadedBundle, head: nn.Module) -> None:
        super().__init__(backbone, bundle)
        self._head = head

    def classifier(self, model: str, method: str) -> nn.Module:
        super().classifier(model, method)  # the same refusals as the real explainer
        return self._head


def spearman(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Rank correlation of two maps; NaN when either is constant (no ranking to compare)."""
    x, y = a.reshape(-1), b.reshape(-1)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@dataclass(frozen=True)
class SanityRow:
    model: str
    method: str
    stage: str
    spearman_mean: float
    spearman_sd: float
    constant_maps: int  # randomised maps without any ranking (excluded from the mean)
    images: int


def cascade(
    backbone: SplitBackbone,
    bundle: LoadedBundle,
    model: str,
    prepared: NDArray[np.uint8],
    originals: NDArray[np.float32],
    classes: NDArray[np.int64],
    method: str,
    seed: int = 0,
    stages: Sequence[tuple[str, int]] = STAGES,
) -> list[SanityRow]:
    """Spearman correlation of the trained maps ``originals`` (N x h x w, explaining ``classes``) with the
    maps of each cascade stage."""
    head = randomised_head(bundle, model, method, seed)
    rows = []
    for name, blocks in stages:
        explainer = _FixedHeadExplainer(randomised_backbone(backbone, blocks, seed + 1), bundle, head)
        values = []
        for pixels, original, cls in zip(prepared, originals, classes, strict=True):
            heat = explainer.explain(pixels, model, int(cls), method).heatmap
            values.append(spearman(original, heat))
        arr = np.asarray(values)
        finite = arr[np.isfinite(arr)]
        rows.append(
            SanityRow(
                model,
                method,
                name,
                float(finite.mean()) if len(finite) else float("nan"),
                float(finite.std()) if len(finite) else float("nan"),
                int((~np.isfinite(arr)).sum()),
                len(arr),
            )
        )
    return rows
