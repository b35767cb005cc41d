"""Embedding what a training run or study needs, all with one backbone and one preprocessing option.

``preprocessing`` names an option of :mod:`hemascope.imaging.preprocess` (``None``: the default option,
:data:`~hemascope.imaging.preprocess.DEFAULT_PREPROCESSING`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    return embed_paths(
        paths, backbone=backbone, address=address, progress=progress, preprocessing=preprocessing
    )


def embedder(
    *, backbone: str | None = None, address: str | None = None, preprocessing: str | None = None
) -> EmbedFn:
    """An ``embed(paths) -> vectors`` for :func:`hemascope.training.augment.embed_augmented`."""

    def embed(paths: Sequence[Path]) -> NDArray[np.float32]:
        return embed_set(paths, backbone=backbone, address=address, preprocessing=preprocessing).vectors

    return embed


def preprocessing_name(version: str) -> str | None:
    """The registered preprocessing option whose version is ``version`` (``None``: unknown)."""
    from hemascope.errors import NotFound
    from hemascope.imaging.preprocess import preprocessing_for_version

    try:
        return preprocessing_for_version(version).name
    except NotFound:
        return None


def preprocessing_options() -> list[str]:
    """Names of every registered preprocessing option."""
    from hemascope.imaging.preprocess import PREPROCESSING

    return list(PREPROCESSING)


def default_preprocessing() -> str:
    from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING

    return DEFAULT_PREPROCESSING
