"""EfficientNet-Lite0 split for fine-tuning: a frozen front (normalisation, stem, blocks ``< split``) and a
trainable back (blocks ``>= split``, head convolution, global average pool).

``back(front(pixels))`` equals :class:`services.feature.torch_modules.EmbeddingModule`'s output for the
same weights (tested), so a fine-tuned backbone is served by the very export path the ImageNet one is.
Importing this module imports torch.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from hemascope.errors import ConfigurationError
from services.feature.backbones import build_torch_module
from services.feature.torch_modules import EfficientNetTrunk, EmbeddingModule

#: Where front features are cached: the input of block 8 (80 channels, 14x14), so a recipe may fine-tune
#: from any later block (8-15 are the 112-, 192- and 320-channel stages, 14x14 and 7x7).
SPLIT_BLOCK = 8
#: The first fine-tuned block by default: blocks 14 and 15 and the head convolution (the 7x7 stage that
#: makes the 1280-d embedding), which trains on two CPU cores in minutes per fold.
TRAIN_FROM = 14
#: The architecture every fine-tuned backbone starts from.
BASE_BACKBONE = "efficientnet_lite0"


class Front(nn.Module):
    """uint8 NHWC pixels -> the input of block ``split`` (frozen, eval mode)."""

    def __init__(self, embedding: EmbeddingModule, split: int) -> None:
        super().__init__()
        trunk = embedding.trunk
        assert isinstance(trunk, EfficientNetTrunk)
        self.embedding = embedding
        self.net = trunk.net
        self.split = split

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(self.embedding.normalise(pixels))))
        for block in net._blocks[: self.split]:
            x = block(x)
        out: torch.Tensor = x
        return out


class Back(nn.Module):
    """Block ``split`` onwards, the head convolution and the global average pool -> ``N x 1280``."""

    def __init__(self, net: nn.Module, split: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(net._blocks)[split:])  # type: ignore[arg-type]
        self.conv_head = net._conv_head
        self.bn1 = net._bn1
        self.act = net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x)))  # type: ignore[operator]
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def training_device() -> torch.device:
    """Where fine-tuning runs: ``$HEMASCOPE_TRAIN_DEVICE`` (``cpu``, ``cuda``, ``cuda:1`` ...), else CUDA
    when PyTorch sees a GPU, else the CPU. Results move back to the CPU, so callers never see the device."""
    asked = os.environ.get("HEMASCOPE_TRAIN_DEVICE", "").strip()
    if not asked:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(asked)
    except RuntimeError as exc:
        raise ConfigurationError(f"HEMASCOPE_TRAIN_DEVICE={asked!r}: not a device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"HEMASCOPE_TRAIN_DEVICE={asked!r}: PyTorch sees no CUDA device here")
    return device


def load_embedding(weights: Path) -> EmbeddingModule:
    """The base architecture with ``weights`` (ImageNet or fine-tuned), eval mode."""
    module = build_torch_module(BASE_BACKBONE, weights)
    assert isinstance(module, EmbeddingModule)
    return module


def split_network(embedding: EmbeddingModule, split: int = SPLIT_BLOCK) -> tuple[Front, Back]:
    """Front (frozen: no gradients) and back of ``embedding``; they share its parameters."""
    front = Front(embedding, split).eval()
    for parameter in front.parameters():
        parameter.requires_grad_(False)
    trunk = embedding.trunk
    assert isinstance(trunk, EfficientNetTrunk)
    back = Back(trunk.net, split)
    for parameter in back.parameters():
        parameter.requires_grad_(True)
    return front, back


def trunk_state_dict(embedding: EmbeddingModule) -> OrderedDict[str, torch.Tensor]:
    """The EfficientNet state dict (keys as the ImageNet weights file has them, no classifier), on the CPU."""
    trunk = embedding.trunk
    assert isinstance(trunk, EfficientNetTrunk)
    return OrderedDict((k, v.detach().cpu().clone()) for k, v in trunk.net.state_dict().items())


def save_weights(embedding: EmbeddingModule, path: Path) -> None:
    """Writes the trunk's state dict (loadable with ``torch.load(weights_only=True)``) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(trunk_state_dict(embedding), partial)
    partial.replace(path)
