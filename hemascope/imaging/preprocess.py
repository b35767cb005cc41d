"""Preprocessing recipes: named, versioned options that turn a decoded image into the backbone's input.

The work is split in two so that the expensive part runs inside the model graph:
- :meth:`Preprocessing.prepare` (Python, per image): decoded RGB uint8 -> ``size x size x 3`` uint8. For
  ``plain`` (the study's recipe) it is :meth:`Preprocessing.resize`: Pillow's antialiased bilinear filter
  (aspect ratio not kept, as in the study; the cell images are near square).
- normalisation (in the exported ONNX graph and the PyTorch wrapper alike): uint8 NHWC -> float NCHW,
  ``(x / 255 - mean) / std``. :meth:`Preprocessing.normalise` is the NumPy reference for tests.

Source-invariant options (see :data:`PREPROCESSING`) compose, in this order, steps named by the tokens of
the option's name:
- ``cellcrop``: segment the white cell (:mod:`hemascope.imaging.cellseg`), crop a square around it in
  which the cell spans a fixed fraction (so the cell, not the image, has a fixed size), and after the stain
  and channel steps blend everything outside the cell into a constant neutral grey (white for the
  haematoxylin channel) with a feathered edge;
- ``macenko`` / ``reinhard``: stain normalisation to a fixed reference (:mod:`hemascope.imaging.stain`);
- ``gray`` / ``hematoxylin``: a single channel replicated to three (:mod:`hemascope.imaging.channels`).

``version`` names every choice above, including the segmentation revision and the stain reference. It is
part of every embedding-cache key, so cached embeddings are never reused across options. ``plain``'s
version is the one committed bundles and caches use and must never change.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from hemascope.errors import NotFound
from hemascope.imaging.cellseg import NEUTRAL, SEG_REVISION, Working, crop_cell, neutralise
from hemascope.imaging.channels import CHANNELS_REVISION, grayscale, haematoxylin_grey, three
from hemascope.imaging.stain import REFERENCE_ID, normalise_stain

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REVISION = 1
_STAINS = ("macenko", "reinhard")
_CHANNELS = ("gray", "hematoxylin")

_fallback_lock = threading.Lock()
_fallbacks: Counter[str] = Counter()


def fallback_counts() -> dict[str, int]:
    """How often each fallback happened in this process (``"<option>:<reason>"`` -> count)."""
    with _fallback_lock:
        return dict(_fallbacks)


@dataclass(frozen=True)
class Prepared:
    """:meth:`Preprocessing.prepare_report`'s result: the pixels and the fallbacks taken (reasons)."""

    pixels: NDArray[np.uint8]
    fallbacks: tuple[str, ...] = ()
    #: where ``pixels`` lie on the original image, ``(x0, y0, x1, y1)``, for cropping options; None when
    #: they cover the whole frame (a resize)
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Preprocessing:
    """A named, versioned preprocessing recipe."""

    name: str = "plain"
    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    norm_name: str = "imagenet"

    def __post_init__(self) -> None:
        tokens = self.name.split("-")
        if self.name != "plain":
            rest = tokens[1:] if tokens[0] == "cellcrop" else tokens
            if rest and rest[0] in _STAINS:
                rest = rest[1:]
            if rest and rest[0] in _CHANNELS:
                rest = rest[1:]
            if rest or not tokens[0]:
                raise ValueError(
                    f"preprocessing name {self.name!r} is not 'plain' or "
                    "[cellcrop][-macenko|-reinhard][-gray|-hematoxylin]"
                )

    @property
    def cell_crop(self) -> bool:
        return self.name.split("-")[0] == "cellcrop"

    @property
    def stain(self) -> str | None:
        return next((t for t in self.name.split("-") if t in _STAINS), None)

    @property
    def channels(self) -> str | None:
        return next((t for t in self.name.split("-") if t in _CHANNELS), None)

    @property
    def version(self) -> str:
        if self.name == "plain":
            return f"rgb-{self.size}-bilinear-aa-{self.norm_name}.v{_REVISION}"
        parts = [f"{self.name}-{self.size}-bilinear-aa-{self.norm_name}"]
        if self.cell_crop:
            parts.append(f"seg{SEG_REVISION}")
        if self.stain:
            parts.append(f"ref{REFERENCE_ID}")
        if self.channels:
            parts.append(f"ch{CHANNELS_REVISION}")
        return ".".join([*parts, f"v{_REVISION}"])

    def resize(self, pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Decoded ``H x W x 3`` uint8 RGB -> ``size x size x 3`` uint8 RGB."""
        _check(pixels)
        if pixels.shape[:2] == (self.size, self.size):
            return pixels
        image = Image.fromarray(pixels, mode="RGB")
        return np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR))

    def prepare(self, pixels: NDArray[np.uint8], working: Working | None = None) -> NDArray[np.uint8]:
        """Decoded ``H x W x 3`` uint8 RGB -> the backbone's ``size x size x 3`` uint8 input. ``working``:
        the pixels' :func:`~hemascope.imaging.cellseg.working_image` when the caller has it (cell-crop
        options start from it; the others ignore it)."""
        return self.prepare_report(pixels, working).pixels

    def prepare_report(self, pixels: NDArray[np.uint8], working: Working | None = None) -> Prepared:
        """:meth:`prepare`, with the fallbacks it took (also counted in :func:`fallback_counts`)."""
        if self.name == "plain":
            return Prepared(self.resize(pixels))
        _check(pixels)
        fallbacks: list[str] = []
        alpha = None
        box = None
        if self.cell_crop:
            crop = crop_cell(pixels, self.size, working=working)
            out, alpha, box = crop.pixels, crop.alpha, crop.box
            if crop.fallback:
                fallbacks.append(f"cellcrop-{crop.reason}")
        else:
            out = self.resize(pixels)
        if self.stain:
            stained = normalise_stain(out, self.stain)
            out = stained.pixels
            if stained.fallback:
                fallbacks.append(stained.reason)
        if self.channels == "hematoxylin":
            # One channel, blended into stain-free white once (the same for each of the three copies).
            grey = haematoxylin_grey(out)
            out = three(grey if alpha is None else neutralise(grey, alpha, 255))
        else:
            if self.channels == "gray":
                out = grayscale(out)
            if alpha is not None:
                out = neutralise(out, alpha, NEUTRAL)  # the light neutral grey
        if fallbacks:
            with _fallback_lock:
                _fallbacks.update(f"{self.name}:{reason}" for reason in fallbacks)
        return Prepared(np.ascontiguousarray(out), tuple(fallbacks), box)

    def normalise(self, batch: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Reference normalisation: ``N x H x W x 3`` uint8 -> ``N x 3 x H x W`` float32."""
        scaled: NDArray[np.float32] = batch.astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        normalised: NDArray[np.float32] = ((scaled - mean) / std).astype(np.float32)
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


def _check(pixels: NDArray[np.uint8]) -> None:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected H x W x 3 uint8 pixels, got {pixels.shape} {pixels.dtype}")


_NAMES = (
    "plain",
    "gray",
    "hematoxylin",
    "macenko",
    "reinhard",
    "cellcrop",
    "cellcrop-gray",
    "cellcrop-hematoxylin",
    "cellcrop-macenko",
    "cellcrop-reinhard",
)
PREPROCESSING: Mapping[str, Preprocessing] = {name: Preprocessing(name=name) for name in _NAMES}
"""Every option by name."""
DEFAULT_PREPROCESSING = "cellcrop-hematoxylin"
STUDY_PREPROCESSING = PREPROCESSING["plain"]


def get_preprocessing(name: str) -> Preprocessing:
    try:
        return PREPROCESSING[name]
    except KeyError:
        known = ", ".join(PREPROCESSING)
        raise NotFound(
            f"unknown preprocessing {name!r}; known: {known}", reason="UNKNOWN_PREPROCESSING"
        ) from None


def preprocessing_for_version(version: str) -> Preprocessing:
    for option in PREPROCESSING.values():
        if option.version == version:
            return option
    raise NotFound(f"no preprocessing option has version {version!r}", reason="UNKNOWN_PREPROCESSING")
