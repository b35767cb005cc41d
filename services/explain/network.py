"""The backbone split for CAM methods: an expensive ``body`` run once, and a cheap ``head`` CAM methods hook.

``body``: normalised NCHW float -> the last convolutional block's pre-activation maps (ResNet50: layer4 up
to its last ReLU; EfficientNet-Lite0: stem, blocks, head conv and batch norm).
``head``: ``target_layer`` (the last conv block's activation, the study's conv5_block3_out for ResNet50)
-> global average pool -> a classifier head (logits or probabilities).

Grad-CAM needs the gradient of the score at ``target_layer``, which depends only on what follows it, and
Ablation-CAM ablates channels of ``target_layer``; both are therefore exact when the library is given the
head alone with the body's maps as its input, and the body runs once per image instead of once per
ablated channel. Score-CAM masks the *input image* and would need the whole network; it is not used.
Importing this module imports torch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.feature.backbones import build_torch_module
from services.feature.torch_modules import EfficientNetTrunk, EmbeddingModule


class EfficientNetBody(nn.Module):
    """EfficientNet(-Lite) up to the head conv's batch norm (the last activation is left to the head)."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * float(idx) / len(net._blocks) if rate else rate)
        out: torch.Tensor = net._bn1(net._conv_head(x))
        return out


class ResNetBody(nn.Module):
    """ResNet up to layer4's last bottleneck, without that bottleneck's final ReLU."""

    def __init__(self, trunk: nn.Sequential) -> None:
        super().__init__()
        self.stages = nn.Sequential(*list(trunk.children())[:-1])
        layer4 = list(trunk.children())[-1]
        self.last_blocks = nn.Sequential(*list(layer4.children())[:-1])
        self.final = list(layer4.children())[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_blocks(self.stages(x))
        block: Any = self.final  # a torchvision Bottleneck
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        result: torch.Tensor = out + identity
        return result


class Head(nn.Module):
    """``target_layer`` (the last conv block's activation) -> global average pool -> ``classifier``."""

    def __init__(self, activation: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.target_layer = activation
        self.classifier = classifier
        # grad-cam reads the device off the model's first parameter; a head may have none of its own
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.target_layer(maps), 1), 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.pooled(maps))
        return out


class SplitBackbone(nn.Module):
    """A backbone as ``body`` + final activation: uint8 NHWC -> normalised -> maps; equal to the embedding."""

    def __init__(self, embedding: EmbeddingModule, body: nn.Module, activation: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding
        self.body = body
        self.activation = activation

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embedding.normalise(pixels)

    def maps(self, normalised: torch.Tensor) -> torch.Tensor:
        """Pre-activation maps of the last conv block, N x C x h x w."""
        out: torch.Tensor = self.body(normalised)
        return out

    def head(self, classifier: nn.Module) -> Head:
        """A head on this backbone's final activation (a private copy, so hooks never leak across calls)."""
        return Head(copy.deepcopy(self.activation), classifier).eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features, equal to :class:`EmbeddingModule`'s (parity is tested)."""
        maps = self.activation(self.maps(self.normalise(pixels)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1)


def split_backbone(name: str, weights: Path) -> SplitBackbone:
    """Loads backbone ``name`` from ``weights`` (frozen, eval mode) and splits it for CAM methods."""
    embedding = build_torch_module(name, weights)
    assert isinstance(embedding, EmbeddingModule)
    trunk = embedding.trunk
    body: nn.Module
    if isinstance(trunk, EfficientNetTrunk):
        body, activation = EfficientNetBody(trunk.net), copy.deepcopy(trunk.net._swish)
    elif isinstance(trunk, nn.Sequential):
        body, activation = ResNetBody(trunk), nn.ReLU()
    else:  # pragma: no cover - build_torch_module only makes the two above
        raise TypeError(f"cannot split a {type(trunk).__name__}")
    split = SplitBackbone(embedding, body, activation).eval()
    for parameter in split.parameters():
        parameter.requires_grad_(False)
    return split
