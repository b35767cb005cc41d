"""Classifier heads on pooled features: the trained bundle models as CAM targets. Imports torch.

- :class:`LogisticHead`: the bundle's scaler and logistic-regression coefficients as one differentiable
  linear layer; its output is the calibrated logits ``z / T`` (``softmax`` of them is exactly the
  classifier service's calibrated probability), so Grad-CAM differentiates the trained model itself.
- :class:`ProbabilityHead`: any bundle model (SVM, random forest, XGBoost, k-means) evaluated on the
  pooled features as a batch; not differentiable, used by gradient-free CAM methods whose target is the
  model's own calibrated probability for the class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hemascope.bundle import LoadedBundle
from hemascope.errors import FailedPrecondition


class LogisticHead(nn.Module):
    """``((f - mean) / scale) @ coef.T + intercept``, divided by the calibration temperature."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, bundle: LoadedBundle, model: str) -> None:
        super().__init__()
        loaded = bundle.models[model]
        estimator = loaded.estimator
        coef = np.asarray(getattr(estimator, "coef_", None), dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] != loaded.n_classes:
            raise FailedPrecondition(
                f"model {model!r} is not a multinomial linear model over {loaded.n_classes} classes",
                reason="NOT_DIFFERENTIABLE",
            )
        mean = np.asarray(bundle.scaler.mean_, dtype=np.float64)
        scale = np.asarray(bundle.scaler.scale_, dtype=np.float64)
        temperature = float(loaded.entry.temperature)
        # fold the scaler into the linear layer: W' = W / scale, b' = b - W' @ mean
        weight = coef / scale[None, :]
        bias = np.asarray(estimator.intercept_, dtype=np.float64) - weight @ mean
        self.register_buffer("weight", torch.from_numpy(weight / temperature).to(torch.float32))
        self.register_buffer("bias", torch.from_numpy(bias / temperature).to(torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(features, self.weight, self.bias)


class ProbabilityHead(nn.Module):
    """The bundle model's calibrated probabilities (N x classes) for a batch of pooled features."""

    def __init__(self, bundle: LoadedBundle, model: str) -> None:
        super().__init__()
        self.bundle = bundle
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        array = features.detach().to(torch.float64).cpu().numpy()
        probs = self.bundle.models[self.model].proba(self.bundle.scale(array))
        return torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))


def is_differentiable(bundle: LoadedBundle, model: str) -> bool:
    """True for models whose head is a linear layer over the classes (logistic regression)."""
    loaded = bundle.models[model]
    if loaded.entry.kind != "sklearn":
        return False
    coef = getattr(loaded.estimator, "coef_", None)
    return coef is not None and np.ndim(coef) == 2 and np.shape(coef)[0] == loaded.n_classes
