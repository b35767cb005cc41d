"""The backbone split the CAM methods use: body + final activation + pool equals the served embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import STUDY_PREPROCESSING
from services.explain.network import split_backbone
from services.feature.backbones import build_torch_module, weights_file

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_split_backbone_equals_embedding_module(
    name: str, real_images: list[Path], resnet50_checkpoint: Path
) -> None:
    weights = weights_file(name, resnet50_checkpoint)
    split = split_backbone(name, weights)
    reference = build_torch_module(name, weights)
    pixels = np.stack([STUDY_PREPROCESSING.resize(decode_image(p.read_bytes()).pixels) for p in real_images])
    with torch.no_grad():
        ours = split(torch.from_numpy(pixels))
        theirs = reference(torch.from_numpy(pixels))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # the split is at the last conv block: 7x7 maps for a 224 input, as many channels as the embedding
    maps = split.maps(split.normalise(torch.from_numpy(pixels[:1])))
    assert maps.shape[1:] == (theirs.shape[1], 7, 7)


def test_split_backbone_is_frozen_and_heads_do_not_share_hooked_modules() -> None:
    split = split_backbone("efficientnet_lite0", weights_file("efficientnet_lite0", None))
    assert not any(p.requires_grad for p in split.parameters())
    first, second = split.head(torch.nn.Identity()), split.head(torch.nn.Identity())
    assert first.target_layer is not second.target_layer
    assert first.target_layer is not split.activation
