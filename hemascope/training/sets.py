"""Embedding what a training run or study needs, all with one backbone and one preprocessing option.

``preprocessing`` names an option of :mod:`hemascope.imaging.preprocess` (``None``: the backbone's
default); it is handed to :func:`hemascope.training.embed.embed_paths` only when set, so this module works
with any version of that function.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.training.augment import EmbedFn
from hemascope.training.embed import EmbeddedSet, embed_paths


def embed_set(
    paths: Sequence[Path],
    *,
    backbone: str | None = None,
    address: str | None = None,
    preprocessing: str | None = None,
    progress: bool = False,
) -> EmbeddedSet:
    extra: dict[str, Any] = {}
    if preprocessing and "preprocessing" in inspect.signature(embed_paths).parameters:
        extra["preprocessing"] = preprocessing
    elif preprocessing and preprocessing != default_preprocessing():
        raise ValueError(f"preprocessing option {preprocessing!r} is not available in this version")
    return embed_paths(paths, backbone=backbone, address=address, progress=progress, **extra)


def embedder(
    *, backbone: str | None = None, address: str | None = None, preprocessing: str | None = None
) -> EmbedFn:
    """An ``embed(paths) -> vectors`` for :func:`hemascope.training.augment.embed_augmented`."""

    def embed(paths: Sequence[Path]) -> NDArray[np.float32]:
        return embed_set(paths, backbone=backbone, address=address, preprocessing=preprocessing).vectors

    return embed


def preprocessing_name(version: str) -> str | None:
    """The registered preprocessing option whose version is ``version`` (``None``: unknown or default)."""
    from hemascope.imaging import preprocess

    registry = getattr(preprocess, "PREPROCESSING", None)
    if not registry:
        return None
    for name, option in registry.items():
        if getattr(option, "version", None) == version:
            return str(name)
    return None


def preprocessing_options() -> list[str]:
    """Names of every registered preprocessing option (just the default before the registry exists)."""
    from hemascope.imaging import preprocess

    registry = getattr(preprocess, "PREPROCESSING", None)
    default = str(getattr(preprocess, "DEFAULT_PREPROCESSING", "plain"))
    return list(registry) if registry else [default]


def default_preprocessing() -> str:
    from hemascope.imaging import preprocess

    return str(getattr(preprocess, "DEFAULT_PREPROCESSING", "plain"))
