"""Preprocessing as in the study: RGB, resize to 224x224, ImageNet mean/std normalisation.

The work is split in two so that the expensive part runs inside the model graph:
- :meth:`Preprocessing.resize` (Python, per image): decoded RGB uint8 -> ``size x size x 3`` uint8, with
  Pillow's antialiased bilinear filter (aspect ratio not kept, as in the study; the cell images are near
  square).
- normalisation (in the exported ONNX graph and the PyTorch wrapper alike): uint8 NHWC -> float NCHW,
  ``(x / 255 - mean) / std``. :meth:`Preprocessing.normalise` is the NumPy reference for tests.

``version`` names every choice above. It is part of every embedding-cache key, so changing any of them
(size, filter, normalisation) must change the version, and cached embeddings are never reused across it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REVISION = 1


@dataclass(frozen=True)
class Preprocessing:
    """A named, versioned preprocessing recipe."""

    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    norm_name: str = "imagenet"

    @property
    def version(self) -> str:
        return f"rgb-{self.size}-bilinear-aa-{self.norm_name}.v{_REVISION}"

    def resize(self, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Decoded ``H x W x 3`` uint8 RGB -> ``size x size x 3`` uint8 RGB."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected H x W x 3 uint8 pixels, got {pixels.shape} {pixels.dtype}")
        if pixels.shape[:2] == (self.size, self.size):
            return pixels
        image = Image.fromarray(pixels, mode="RGB")
        return np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR))

    def normalise(self, batch: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Reference normalisation: ``N x H x W x 3`` uint8 -> ``N x 3 x H x W`` float32."""
        scaled: NDArray[np.float32] = batch.astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        normalised: NDArray[np.float32] = ((scaled - mean) / std).astype(np.float32)
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


STUDY_PREPROCESSING = Preprocessing()
