"""Single-channel inputs replicated to three channels: luminance, and haematoxylin by colour deconvolution.

The haematoxylin channel uses Ruifrok and Johnston's stain matrix (the one scikit-image's ``rgb2hed``
uses): optical density ``-log((I + 1) / 256)`` times the inverse of the H / E / DAB matrix. The H
concentration is scaled per image by its :data:`H_PERCENTILE`-th percentile (at least :data:`H_MIN_SCALE`,
so a stain-free image stays white instead of amplifying noise) and rendered dark-on-white like a grey
image: ``255 * (1 - clip(H / scale, 0, 1))``. Per-image scaling removes the scanners' overall stain
intensity, which is part of what a source-invariant input must hide.

The optical densities come from a 256-entry table per channel (the same ``-log((I + 1) / 256)`` values,
looked up instead of recomputed per pixel) and the percentile from :func:`hemascope.imaging.filters.
percentile`; the result is bit for bit what the per-pixel definition gives.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from hemascope.imaging.filters import percentile

CHANNELS_REVISION = 1
#: Rows: haematoxylin, eosin, DAB optical densities in R, G, B (Ruifrok & Johnston 2001).
_HED_FROM_RGB_ROWS = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
    dtype=np.float64,
)
_RGB_FROM_HED = _HED_FROM_RGB_ROWS / np.linalg.norm(_HED_FROM_RGB_ROWS, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
H_PERCENTILE = 99.0
H_MIN_SCALE = 0.2
#: ITU-R BT.601 luma weights (Pillow's ``convert("L")``).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: ``-log((I + 1) / 256)`` for every 8-bit level, in each of the three channels (for ``cv2.LUT``).
_OD_TABLE = np.repeat(-np.log((np.arange(256, dtype=np.float64) + 1) / 256)[:, None], 3, axis=1).reshape(
    1, 256, 3
)


def _three(channel: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(np.repeat(channel[..., None], 3, axis=2))


def grayscale(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Luma, replicated to three channels."""
    luma = pixels.astype(np.float32) @ _LUMA
    return _three(np.clip(np.rint(luma), 0, 255).astype(np.uint8))


def haematoxylin_density(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """The haematoxylin concentration (optical-density units) per pixel, ``H x W``."""
    od = np.asarray(cv2.LUT(np.ascontiguousarray(pixels), _OD_TABLE), dtype=np.float64)
    return np.asarray(np.maximum(od @ _HED_FROM_RGB[:, 0], 0.0))


def haematoxylin_grey(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The haematoxylin channel, dark where the stain is, ``H x W``."""
    density = haematoxylin_density(pixels)
    scale = max(percentile(density, [H_PERCENTILE])[0], H_MIN_SCALE)
    grey = 255 * (1 - np.clip(density / scale, 0, 1))
    return np.rint(grey).astype(np.uint8)


def haematoxylin(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The haematoxylin channel, dark where the stain is, replicated to three channels."""
    return _three(haematoxylin_grey(pixels))


def three(channel: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """A single ``H x W`` channel replicated to ``H x W x 3``."""
    return _three(channel)
