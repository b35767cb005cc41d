"""Stain normalisation (Macenko, Reinhard) to one fixed, versioned reference, via torchstain's NumPy backend.

The reference is :data:`REFERENCE_IMAGE` (a training image of bloodcells-5class, named by path and
sha256); its fitted parameters are the constants below, so nothing is fitted at run time and the result
does not depend on the data being present. :func:`fit_reference` refits them from the image
(``tests/unit/test_stain.py`` checks that it gives these constants). :data:`REFERENCE_ID`, a short hash of
the constants and the method settings, is part of every stain-normalising preprocessing version.

Macenko needs enough stained pixels to estimate the stain vectors; on an image with too little stain (or
when the estimate fails numerically) it falls back, deterministically, to Reinhard with the same reference;
Reinhard itself leaves an image with (near) constant colour channels unchanged. Both report it:
:class:`StainResult.fallback`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: The reference image, relative to the shared data directory, and its sha256.
REFERENCE_IMAGE = "bloodcells-5class/train/monocyte/MO_101258.jpg"
REFERENCE_SHA256 = "f07b342f05437571d035d9b7358c0a624c994b0af67622158f28d6e7c065d4cd"

MACENKO_IO = 240
MACENKO_ALPHA = 1
MACENKO_BETA = 0.15
#: Macenko needs at least this fraction of pixels with optical density >= beta in every channel.
MACENKO_MIN_STAINED = 0.01
#: ... and OD variance along the second principal axis of at least this (else the stain plane is undefined).
MACENKO_MIN_SPREAD = 1e-5

#: Macenko stain matrix (columns: haematoxylin, eosin; rows: R, G, B OD) and the 99th-percentile
#: concentrations, fitted on the reference image.
MACENKO_HE = (
    (0.6909239047122736, 0.3805362779094912),
    (0.7101879924491418, 0.9211714292496983),
    (0.1351191077464745, 0.08145759098364903),
)
MACENKO_MAX_C = (0.8893084149731079, 2.0083356659261113)
#: Reinhard target: mean and standard deviation of L, a, b (torchstain's LAB scaling).
REINHARD_MEANS = (78.62750244140625, 11.306257247924805, 5.025203704833984)
REINHARD_STDS = (16.64961051940918, 9.97629451751709, 17.002241134643555)


def _reference_id() -> str:
    record = {
        "image": REFERENCE_IMAGE,
        "sha256": REFERENCE_SHA256,
        "macenko": [MACENKO_HE, MACENKO_MAX_C, MACENKO_IO, MACENKO_ALPHA, MACENKO_BETA],
        "macenko_guards": [MACENKO_MIN_STAINED, MACENKO_MIN_SPREAD],
        "reinhard": [REINHARD_MEANS, REINHARD_STDS],
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]


REFERENCE_ID = _reference_id()
STAIN_METHODS = ("macenko", "reinhard")


@dataclass(frozen=True)
class StainResult:
    pixels: NDArray[np.uint8]
    fallback: bool
    reason: str = ""


@cache
def _macenko() -> Any:
    import torchstain

    normaliser = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    normaliser.HERef = np.asarray(MACENKO_HE, dtype=np.float64)
    normaliser.maxCRef = np.asarray(MACENKO_MAX_C, dtype=np.float64)
    return normaliser


@cache
def _reinhard() -> Any:
    import torchstain

    normaliser = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
    normaliser.target_means = np.asarray(REINHARD_MEANS, dtype=np.float32)
    normaliser.target_stds = np.asarray(REINHARD_STDS, dtype=np.float32)
    return normaliser


def _lab_stds(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    from torchstain.numpy.utils import lab_split, rgb2lab

    lab = lab_split(rgb2lab(pixels.astype(np.float32) / 255))
    return np.asarray([float(np.std(channel)) for channel in lab])


def reinhard(pixels: NDArray[np.uint8]) -> StainResult:
    """Reinhard colour transfer (LAB mean and std per channel) to the reference."""
    if (_lab_stds(pixels) < 1e-3).any():
        return StainResult(pixels, fallback=True, reason="reinhard-flat")
    out = np.asarray(_reinhard().normalize(pixels), dtype=np.uint8)
    return StainResult(np.ascontiguousarray(out), fallback=False)


def _stained_od(pixels: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Optical densities of the pixels Macenko uses (OD >= beta in every channel), ``N x 3``."""
    od = -np.log((pixels.reshape(-1, 3).astype(np.float64) + 1) / MACENKO_IO)
    return od[(od >= MACENKO_BETA).all(axis=1)]


def macenko(pixels: NDArray[np.uint8]) -> StainResult:
    """Macenko stain normalisation to the reference; Reinhard when the stain vectors cannot be estimated."""
    stained = _stained_od(pixels)
    if stained.shape[0] < max(3.0, MACENKO_MIN_STAINED * pixels.shape[0] * pixels.shape[1]):
        return _macenko_fallback(pixels, "macenko-little-stain")
    with np.errstate(all="ignore"):
        cov = np.cov(stained.T)
    if not np.isfinite(cov).all():
        return _macenko_fallback(pixels, "macenko-failed")
    if np.linalg.eigvalsh(cov)[-2] < MACENKO_MIN_SPREAD:
        # The stain plane (two largest eigenvectors of the OD covariance) is undefined: one colour only.
        return _macenko_fallback(pixels, "macenko-one-colour")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out, _, _ = _macenko().normalize(
                pixels, Io=MACENKO_IO, alpha=MACENKO_ALPHA, beta=MACENKO_BETA, stains=False
            )
    except (ValueError, IndexError, np.linalg.LinAlgError):
        return _macenko_fallback(pixels, "macenko-failed")
    return StainResult(np.ascontiguousarray(np.asarray(out, dtype=np.uint8)), fallback=False)


def _macenko_fallback(pixels: NDArray[np.uint8], reason: str) -> StainResult:
    result = reinhard(pixels)
    return StainResult(result.pixels, fallback=True, reason=reason if not result.fallback else result.reason)


def normalise_stain(pixels: NDArray[np.uint8], method: str) -> StainResult:
    if method == "macenko":
        return macenko(pixels)
    if method == "reinhard":
        return reinhard(pixels)
    raise ValueError(f"unknown stain method {method!r}; known: {', '.join(STAIN_METHODS)}")


def fit_reference(path: Path) -> dict[str, Any]:
    """Fits both normalisers on the image at ``path``: the values the constants above must hold."""
    import torchstain
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    mac = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    mac.fit(pixels, Io=MACENKO_IO, alpha=MACENKO_ALPHA, beta=MACENKO_BETA)
    rei = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
    rei.fit(pixels)
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "macenko_he": np.asarray(mac.HERef).tolist(),
        "macenko_max_c": np.asarray(mac.maxCRef).tolist(),
        "reinhard_means": np.asarray(rei.target_means).tolist(),
        "reinhard_stds": np.asarray(rei.target_stds).tolist(),
    }
