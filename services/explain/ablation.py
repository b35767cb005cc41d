"""Ablation-CAM computed on the pooled features: the grad-cam library's result, without its C forward passes.

The head a CAM method hooks (:class:`~services.explain.network.Head`) is the target layer's activation,
then global average pooling, then the model. Zeroing channel ``k`` of that activation (the library's
Ablation-CAM with :class:`~services.explain.cam.ZeroAblationLayer`) therefore changes pooled feature ``k``
to 0 and nothing else: the model's score with channel ``k`` ablated is the model evaluated on the pooled
vector with entry ``k`` set to the scaled value of 0. The library instead repeats the ``C x h x w``
activation for every channel, pools each copy and calls the model in batches; here every ablated vector
is built directly (``C x C`` numbers instead of ``C x C x h x w``) and the model is called once on them:

- channels whose map is zero everywhere are not ablated: zeroing them changes nothing (weight 0), and
  their map adds nothing to the CAM whatever the weight; on EfficientNet-Lite0 (ReLU6) that is 30-70% of
  the 1280 channels;
- an RBF SVM's probabilities for these one-feature changes come from :mod:`services.explain.rbf_svm`
  (exact, ``C`` times fewer kernel operations than libsvm); every other model gets one ``proba`` call on
  the whole batch, whose first row is the image itself (its probabilities: no separate call).

The weights and the map follow the library: ``w_k = (y - y_k) / y`` in float32 with ``y`` the calibrated
probability of the class, ``cam = relu(sum_k w_k A_k)``, min-max scaled as ``BaseCAM`` scales it.
Tests check the result equals the library's Ablation-CAM on real images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from pytorch_grad_cam.utils.image import scale_cam_image

from hemascope.bundle import LoadedBundle, apply_temperature
from services.explain import rbf_svm
from services.explain.network import Head


def ablated_probabilities(
    bundle: LoadedBundle,
    model: str,
    scaled: NDArray[np.float64],
    features: NDArray[np.int64],
    values: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Calibrated probabilities (rows x classes) of copies of the scaled features ``scaled`` (1-D), copy
    ``i`` with feature ``features[i]`` set to ``values[i]``; equal to ``bundle.models[model].proba`` of
    those copies."""
    loaded = bundle.models[model]
    if loaded.entry.kind == "sklearn" and rbf_svm.supported(loaded.estimator):
        raw = rbf_svm.one_feature_proba(loaded.estimator, scaled, features, values)
        return apply_temperature(raw, loaded.entry.temperature)
    rows = np.repeat(scaled[None, :], len(features), axis=0)
    rows[np.arange(len(features)), features] = values
    return loaded.proba(rows)


def active_channels(channel_maps: NDArray[np.float32]) -> NDArray[np.int64]:
    """Indices of the channels (``C x h x w``) whose map is not zero everywhere: the only ones whose
    ablation can change the score or whose map can add to the CAM."""
    flat = np.abs(channel_maps).reshape(channel_maps.shape[0], -1)
    return np.flatnonzero(flat.max(axis=1) > 0).astype(np.int64)


@dataclass(frozen=True)
class PooledAblation:
    """One image's ablation, every class at once: the image's own calibrated probabilities, and those with
    each active channel ablated; any class's map follows without another model call."""

    channel_maps: NDArray[np.float32]  # C x h x w: the target layer's activation
    active: NDArray[np.int64]  # the channels ablated (see :func:`active_channels`)
    probabilities: NDArray[np.float64]  # classes: the image as it is
    ablated: NDArray[np.float64]  # active channels x classes

    def heatmap(self, target: int) -> NDArray[np.float32]:
        """The ``h x w`` Ablation-CAM of class ``target``, in [0, 1], as the library computes it."""
        score = np.float32(self.probabilities[target])
        scores = np.full(self.channel_maps.shape[0], score, dtype=np.float32)
        scores[self.active] = self.ablated[:, target].astype(np.float32)
        weights = (score - scores) / score
        cam = np.maximum((weights[:, None, None] * self.channel_maps).sum(axis=0), 0)
        heat: NDArray[np.float32] = scale_cam_image(scale_cam_image(cam[None]))[0]
        return heat


def pooled_ablation(head: Head, maps: torch.Tensor, bundle: LoadedBundle, model: str) -> PooledAblation:
    """The ablation of one image's maps (``1 x C x h x w``, the body's output) for ``model``: one model
    call, whose first row is the image itself (a copy with no feature changed)."""
    with torch.no_grad():
        activation = head.target_layer(maps)
        pooled = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(activation, 1), 1)[0].numpy()
    channel_maps = activation[0].numpy()  # float32
    scaled = bundle.scale(pooled.astype(np.float64)[None, :])[0]
    zero = bundle.scale(np.zeros((1, scaled.size)))[0]
    active = active_channels(channel_maps)
    features = np.concatenate([[0], active]).astype(np.int64)
    values = np.concatenate([[scaled[0]], zero[active]])
    probabilities = ablated_probabilities(bundle, model, scaled, features, values)
    return PooledAblation(channel_maps, active, probabilities[0], probabilities[1:])
