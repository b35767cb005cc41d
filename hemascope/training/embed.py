"""Embedding a dataset with the feature backbone: in-process, or through a running feature service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

CHUNK = 32


@dataclass(frozen=True)
class EmbeddedSet:
    vectors: NDArray[np.float32]  # N x dimension
    content_hashes: list[str]
    backbone: str
    weights_hash: str
    preprocessing: str
    cache_hits: int


class EmbeddingFailed(RuntimeError):
    """Some images could not be embedded; the message lists them."""


class PreprocessingMismatch(EmbeddingFailed):
    """The feature service runs another preprocessing option than the one asked for."""


def _local(
    paths: Sequence[Path], backbone: str | None, preprocessing: str | None, progress: bool
) -> EmbeddedSet:
    from hemascope.imaging.inputs import ImageInput
    from services.feature.core import EmbedResult, FeatureCore
    from services.feature.settings import FeatureSettings

    overrides: dict[str, Any] = {"backbone": backbone} if backbone else {}
    if preprocessing:
        overrides["preprocessing"] = preprocessing
    core = FeatureCore(FeatureSettings(**overrides))
    core.load()
    vectors, hashes, failures, hits = [], [], [], 0
    try:
        bar = tqdm(total=len(paths), desc="embedding", unit="img", disable=not progress)
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            # Vectors only: the input check's verdicts and the acquisition fingerprints are not used here
            # (training fingerprints the images itself, cached), so they are skipped; a blank image is
            # still refused.
            outcomes = core.embed_many([ImageInput(p.read_bytes()) for p in chunk], inspect=False)
            for path, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, EmbedResult):
                    vectors.append(outcome.vector)
                    hashes.append(outcome.content_hash)
                    hits += outcome.cache_hit
                else:
                    failures.append(f"{path}: {outcome.message}")
            bar.update(len(chunk))
        bar.close()
        info = core.info
    finally:
        core.close()
    if failures:
        raise EmbeddingFailed(f"{len(failures)} images failed: " + "; ".join(failures[:5]))
    return EmbeddedSet(
        np.stack(vectors), hashes, info.spec.name, info.weights_hash, info.preprocessing.version, hits
    )


def _check_remote_preprocessing(served: str, expected: str | None, address: str) -> None:
    if expected is not None and served != expected:
        raise PreprocessingMismatch(
            f"the feature service at {address} runs preprocessing {served!r}, not the requested "
            f"{expected!r}; "
            "start it with HEMASCOPE_FEATURE_PREPROCESSING (or `hemascope serve feature --preprocessing`) "
            "set to that option, or omit the address to embed in-process"
        )


def _remote(
    paths: Sequence[Path], address: str, backbone: str | None, preprocessing: str | None, progress: bool
) -> EmbeddedSet:
    import grpc

    from hemascope.imaging.preprocess import get_preprocessing
    from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc

    expected = get_preprocessing(preprocessing).version if preprocessing else None
    vectors, hashes, failures, hits = [], [], [], 0
    emb: Any = None
    with grpc.insecure_channel(address) as channel:
        stub = feature_pb2_grpc.FeatureServiceStub(channel)
        info = stub.GetBackboneInfo(feature_pb2.GetBackboneInfoRequest(), timeout=60)
        _check_remote_preprocessing(info.preprocessing, expected, address)
        bar = tqdm(total=len(paths), desc="embedding", unit="img", disable=not progress)
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            request = feature_pb2.EmbedBatchRequest(
                images=[common_pb2.Image(data=p.read_bytes()) for p in chunk], backbone=backbone or ""
            )
            for path, result in zip(chunk, stub.EmbedBatch(request, timeout=300).results, strict=True):
                if result.WhichOneof("outcome") == "result":
                    emb = result.result.embedding
                    _check_remote_preprocessing(emb.preprocessing, expected, address)
                    vectors.append(np.asarray(emb.values, dtype=np.float32))
                    hashes.append(result.result.content_hash)
                    hits += result.result.cache_hit
                else:
                    failures.append(f"{path}: {result.error.message}")
            bar.update(len(chunk))
        bar.close()
    if failures or emb is None:
        raise EmbeddingFailed(f"{len(failures)} images failed: " + "; ".join(failures[:5]))
    return EmbeddedSet(np.stack(vectors), hashes, emb.backbone, emb.weights_hash, emb.preprocessing, hits)


def embed_paths(
    paths: Sequence[Path],
    *,
    backbone: str | None = None,
    address: str | None = None,
    progress: bool = True,
    preprocessing: str | None = None,
) -> EmbeddedSet:
    """Embeds ``paths`` in order; uses the feature service at ``address`` when given, else in-process.

    ``preprocessing`` names an option of :data:`hemascope.imaging.preprocess.PREPROCESSING` (``None``: the
    service's or the settings' default). In-process it overrides ``FeatureSettings.preprocessing``; with a
    service it is checked against the service's provenance and :class:`PreprocessingMismatch` is raised
    when the service runs another option (an unknown name raises ``NotFound`` first).
    """
    if address:
        return _remote(paths, address, backbone, preprocessing, progress)
    return _local(paths, backbone, preprocessing, progress)
