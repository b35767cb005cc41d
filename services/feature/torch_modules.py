"""PyTorch modules for export and parity checks. Importing this module imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # imports nothing but torch at run time, so the module also loads beside a bare PyTorch
    from hemascope.imaging.preprocess import Preprocessing


class EfficientNetTrunk(nn.Module):
    """EfficientNet(-Lite) up to its last conv stage (``extract_features``)."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net.extract_features(x)
        return out


class EmbeddingModule(nn.Module):
    """uint8 ``N x H x W x 3`` RGB -> normalised NCHW -> trunk -> global average pool -> ``N x D``.

    The normalisation is part of the module (and so of the ONNX graph) so that serving only resizes.
    ``trunk`` ends at the last convolutional block, which is what Grad-CAM hooks.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, trunk: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.trunk(self.normalise(pixels))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)
