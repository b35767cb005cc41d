"""Checking a call's embeddings against the served bundle, and choosing its models. No gRPC here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import Manifest
from hemascope.errors import FailedPrecondition, InvalidArgument, NotFound, echo


@dataclass(frozen=True)
class EmbeddingInput:
    """One embedding as a caller sends it; empty provenance fields mean "not stated"."""

    values: NDArray[np.float32]
    dimension: int = 0
    backbone: str = ""
    weights_hash: str = ""
    preprocessing: str = ""
    #: the feature service's input check (hemascope.imaging.inputcheck.InputKind value); "" when unchecked
    input_kind: str = ""
    #: the acquisition fingerprint and its revision; None when the embedding carried none
    acquisition: NDArray[np.float32] | None = None
    acquisition_revision: int = 0

    @property
    def not_single_cell(self) -> bool:
        """Checked and found not to be one centred white cell: every prediction on it is referred."""
        return self.input_kind not in ("", "single_cell")


def select_models(manifest: Manifest, requested: Sequence[str]) -> list[str]:
    """The models to run: all (bundle order) when none are named, else the named ones, duplicates dropped."""
    if not requested:
        return list(manifest.models)
    chosen = list(dict.fromkeys(requested))
    unknown = [name for name in chosen if name not in manifest.models]
    if unknown:
        raise NotFound(
            f"unknown model(s) {', '.join(echo(name) for name in unknown[:4])}; bundle "
            f"{manifest.bundle_version} serves {list(manifest.models)}",
            reason="UNKNOWN_MODEL",
            field="models",
        )
    return chosen


def _check_field(
    manifest: Manifest, where: str, name: str, given: str, expected: str, reason: str, require: bool
) -> None:
    """A provenance field must be the bundle's when stated (and be stated at all if ``require``)."""
    if not given and require and expected:
        raise FailedPrecondition(
            f"{where}.{name} is empty; this service requires it (bundle {manifest.bundle_version} "
            f"expects {expected!r})",
            reason="MISSING_PROVENANCE",
            field=f"{where}.{name}",
        )
    if given and expected and given != expected:
        raise FailedPrecondition(
            f"{where} has {name} {given!r}, but bundle {manifest.bundle_version} was trained on "
            f"{expected!r}; embed with the bundle's backbone or load a bundle trained on this one",
            reason=reason,
            field=f"{where}.{name}",
        )


def _check_one(manifest: Manifest, item: EmbeddingInput, where: str, require: bool) -> None:
    """Backbone first (the likelier cause of a wrong dimension), then dimension, weights, preprocessing."""
    _check_field(manifest, where, "backbone", item.backbone, manifest.backbone, "WRONG_BACKBONE", require)
    _check_dimension(manifest, item, where)
    _check_field(
        manifest, where, "weights_hash", item.weights_hash, manifest.weights_hash, "WRONG_WEIGHTS", require
    )
    _check_field(
        manifest,
        where,
        "preprocessing",
        item.preprocessing,
        manifest.preprocessing,
        "WRONG_PREPROCESSING",
        require,
    )


def _check_dimension(manifest: Manifest, item: EmbeddingInput, where: str) -> None:
    size = int(item.values.shape[0])
    if item.dimension and item.dimension != size:
        raise InvalidArgument(
            f"{where} says dimension {item.dimension} but holds {size} values",
            reason="DIMENSION_MISMATCH",
            field=f"{where}.dimension",
        )
    if size != manifest.dimension:
        raise FailedPrecondition(
            f"{where} has {size} values; bundle {manifest.bundle_version} ({manifest.backbone}) expects "
            f"{manifest.dimension}",
            reason="WRONG_DIMENSION",
            field=f"{where}.values",
        )


def embedding_matrix(
    manifest: Manifest, embeddings: Sequence[EmbeddingInput], *, max_items: int, require_provenance: bool
) -> NDArray[np.float32]:
    """The embeddings as one N x dimension matrix, after every check; raises the first problem found."""
    if not embeddings:
        raise InvalidArgument("no embeddings to classify", reason="NO_EMBEDDINGS", field="embeddings")
    if len(embeddings) > max_items:
        raise InvalidArgument(
            f"{len(embeddings)} embeddings in one call; the limit is {max_items}. Split the call.",
            reason="TOO_MANY_EMBEDDINGS",
            field="embeddings",
        )
    for index, item in enumerate(embeddings):
        _check_one(manifest, item, f"embeddings[{index}]", require_provenance)
    matrix = np.stack([item.values for item in embeddings]).astype(np.float32, copy=False)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        index = int(np.argmin(finite))
        raise InvalidArgument(
            f"embeddings[{index}] holds NaN or infinite values",
            reason="NON_FINITE_VALUES",
            field=f"embeddings[{index}].values",
        )
    return matrix
