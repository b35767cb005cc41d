"""Faithfulness of maps: deletion/insertion curves with a blur baseline, and ROAD, per image and model.

Every score is the explained model's calibrated probability of the class explained (its predicted class):
for logistic regression that is ``softmax`` of :class:`~services.explain.heads.LogisticHead`'s logits (the
library's ``ClassifierOutputSoftmaxTarget``), for the others the model's own probability (the library's
``ClassifierOutputTarget`` on :class:`~services.explain.heads.ProbabilityHead`). Perturbed images run through
the backbone once and every model scores the same pooled features, so a random map's perturbations are
shared by all models.

- **Deletion / insertion** (Petsiuk et al. 2018): pixels in the map's order (most relevant first) are
  replaced by a blurred copy of the image (deletion), or copied from the image into the blurred copy
  (insertion), in steps of :data:`STEPS`; the area under the probability curve is the score (deletion:
  lower is better; insertion: higher; ``insertion - deletion``: higher).
- **ROAD** (Rong et al. 2022), the grad-cam library's ``ROADCombined`` at :data:`ROAD_PERCENTILES`:
  ``(LeRF - MoRF) / 2`` of the probability change after imputing the least / most relevant pixels with
  noisy linear imputation (:mod:`.imputation`); higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst

from hemascope.bundle import LoadedBundle
from services.explain.evaluation.imputation import FastNoisyLinearImputer
from services.explain.network import SplitBackbone

STEPS = np.round(np.linspace(0.0, 1.0, 11), 2)  # fraction of pixels deleted / inserted
BLUR_SIGMA = 10.0  # pixels at 224x224: the cell's texture and outline are gone, its colour mass is not
ROAD_PERCENTILES = (20, 50, 80)


class Scorer:
    """Pooled features of image batches, and every model's calibrated probabilities of them.

    ``embed`` (uint8 N x S x S x 3 -> N x D), when given, computes the features instead of the torch
    backbone: the backbone's ONNX export, the graph the feature service serves, about 4x faster here
    (deletion/insertion images are uint8; ROAD's imputed inputs are float and always use the backbone).
    """

    def __init__(
        self,
        backbone: SplitBackbone,
        bundle: LoadedBundle,
        embed: Callable[[NDArray[np.uint8]], NDArray[np.float32]] | None = None,
        batch: int = 32,
    ) -> None:
        self.backbone = backbone
        self.bundle = bundle
        self.models = tuple(bundle.models)
        self.embed = embed
        self.batch = batch

    def pooled_normalised(self, normalised: torch.Tensor) -> NDArray[np.float64]:
        parts = []
        with torch.inference_mode():
            for start in range(0, normalised.shape[0], self.batch):
                maps = self.backbone.maps(normalised[start : start + self.batch])
                act = self.backbone.activation(maps)
                parts.append(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(act, 1), 1).numpy())
        return np.concatenate(parts).astype(np.float64)

    def pooled(self, pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
        if self.embed is None:
            return self.pooled_normalised(
                self.backbone.normalise(torch.from_numpy(np.ascontiguousarray(pixels)))
            )
        parts = [self.embed(pixels[i : i + self.batch]) for i in range(0, len(pixels), self.batch)]
        return np.concatenate(parts).astype(np.float64)

    def probabilities(self, pooled: NDArray[np.float64]) -> NDArray[np.float64]:
        """models x N x classes."""
        scaled = self.bundle.scale(pooled)
        return np.stack([self.bundle.models[m].proba(scaled) for m in self.models])


def blurred(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out = np.asarray(cv2.GaussianBlur(pixels, (0, 0), sigmaX=BLUR_SIGMA, borderType=cv2.BORDER_REFLECT))
    return out.astype(np.uint8)


def relevance_order(full_map: NDArray[np.float32], tie_break: NDArray[np.int64]) -> NDArray[np.int64]:
    """Flat pixel indices, most relevant first; equal values in the fixed random order ``tie_break``."""
    return np.lexsort((tie_break, -full_map.reshape(-1))).astype(np.int64)


def _curve_images(
    pixels: NDArray[np.uint8], blur: NDArray[np.uint8], order: NDArray[np.int64]
) -> NDArray[np.uint8]:
    """Deletion then insertion images at the inner steps (the end points are the same for every map)."""
    flat, flat_blur = pixels.reshape(-1, 3), blur.reshape(-1, 3)
    out = []
    for mode in ("deletion", "insertion"):
        for fraction in STEPS[1:-1]:
            chosen = order[: round(float(fraction) * len(order))]
            base, source = (flat, flat_blur) if mode == "deletion" else (flat_blur, flat)
            image = base.copy()
            image[chosen] = source[chosen]
            out.append(image.reshape(pixels.shape))
    return np.stack(out)


@dataclass(frozen=True)
class Curves:
    """Per map (rows) and model (columns): the probability curves of the model's explained class."""

    deletion: NDArray[np.float64]  # maps x models x steps
    insertion: NDArray[np.float64]

    def auc(self, which: str) -> NDArray[np.float64]:
        curve = self.deletion if which == "deletion" else self.insertion
        return np.asarray(np.trapezoid(curve, dx=float(STEPS[1] - STEPS[0]), axis=-1), np.float64)


def deletion_insertion(
    scorer: Scorer,
    pixels: NDArray[np.uint8],
    full_maps: Sequence[NDArray[np.float32]],
    targets: NDArray[np.int64],
    seed: int = 0,
) -> Curves:
    """Curves of every model (explaining class ``targets[j]``) under each of ``full_maps`` (size x size)."""
    blur = blurred(pixels)
    tie_break = np.random.default_rng(seed).permutation(pixels.shape[0] * pixels.shape[1]).astype(np.int64)
    batch = [pixels[None], blur[None]]
    batch += [_curve_images(pixels, blur, relevance_order(m, tie_break)) for m in full_maps]
    probs = scorer.probabilities(scorer.pooled(np.concatenate(batch)))  # models x N x classes
    rows = np.arange(len(targets))
    target_probs = probs[rows, :, targets]  # models x N
    original, base = target_probs[:, 0], target_probs[:, 1]
    inner = len(STEPS) - 2
    per_map = target_probs[:, 2:].reshape(len(targets), len(full_maps), 2, inner).transpose(1, 0, 2, 3)
    shape = (len(full_maps), len(targets), 1)
    first, last = np.broadcast_to(original[None, :, None], shape), np.broadcast_to(base[None, :, None], shape)
    deletion = np.concatenate([first, per_map[:, :, 0], last], axis=-1)
    insertion = np.concatenate([last, per_map[:, :, 1], first], axis=-1)
    return Curves(deletion, insertion)


def road_scores(
    scorer: Scorer,
    pixels: NDArray[np.uint8],
    full_maps: Sequence[NDArray[np.float32]],
    targets: NDArray[np.int64],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
) -> NDArray[np.float64]:
    """ROADCombined score (maps x models): ``(mean LeRF change - mean MoRF change) / 2``."""
    normalised = scorer.backbone.normalise(torch.from_numpy(np.ascontiguousarray(pixels[None])))[0]
    imputer = FastNoisyLinearImputer(seed=seed)
    perturbed = []
    for full_map in full_maps:
        mask = torch.from_numpy(full_map)
        for percentile in percentiles:
            perturbed.append(RemoveMostRelevantFirst(percentile, imputer)(normalised, mask))
            perturbed.append(RemoveLeastRelevantFirst(percentile, imputer)(normalised, mask))
    # the imputed float input runs through the torch backbone (uint8 ONNX input would round it)
    probs = scorer.probabilities(scorer.pooled_normalised(torch.stack(perturbed)))  # models x N x classes
    target_probs = probs[np.arange(len(targets)), :, targets]  # models x N (the original cancels out)
    per_map = target_probs.reshape(len(targets), len(full_maps), len(percentiles), 2)
    morf, lerf = per_map[..., 0].mean(axis=-1), per_map[..., 1].mean(axis=-1)
    return np.asarray(((lerf - morf) / 2).T, np.float64)


@dataclass(frozen=True)
class Paired:
    """CAM minus random (sign-adjusted so that positive means better than random), over images."""

    cam_mean: float
    random_mean: float
    diff_mean: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float
    better_share: float  # images where the CAM beat the random maps' mean
    images: int

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "better than random"
        if self.ci_high < 0:
            return "WORSE than random"
        return "not better than random"


def paired(
    cam: NDArray[np.float64], random: NDArray[np.float64], higher_is_better: bool, seed: int = 0
) -> Paired:
    """Paired comparison; ``random`` is each image's mean over random seeds. 95 % bootstrap CI."""
    from scipy.stats import wilcoxon

    sign = 1.0 if higher_is_better else -1.0
    diff = sign * (cam - random)
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), size=(2000, len(diff)))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return Paired(
        float(cam.mean()),
        float(random.mean()),
        float(diff.mean()),
        float(low),
        float(high),
        p,
        float((diff > 0).mean()),
        len(diff),
    )
