"""``hemascope embed``: through a running feature service, or in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc

from hemascope.commands.errors import check_reachable, print_image_error
from hemascope.errors import FailedPrecondition, HemascopeError


@dataclass(frozen=True)
class EmbedLine:
    """What is printed for one image."""

    path: str
    dimension: int
    backbone: str
    weights_hash: str
    cache_hit: bool
    ms: float
    content_hash: str
    values: list[float]
    preprocessing: str = ""


Embedder = Callable[[str, bytes], EmbedLine]


def _service_embedder(
    address: str, backbone: str | None, preprocessing: str | None, timeout: float
) -> tuple[Embedder, Callable[[], None]]:
    from hemascope.imaging.preprocess import get_preprocessing
    from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc

    expected = get_preprocessing(preprocessing).version if preprocessing else None
    channel = grpc.insecure_channel(address)
    stub = feature_pb2_grpc.FeatureServiceStub(channel)

    def run(path: str, data: bytes) -> EmbedLine:
        start = time.perf_counter()
        request = feature_pb2.EmbedRequest(image=common_pb2.Image(data=data), backbone=backbone or "")
        response = stub.Embed(request, timeout=timeout)
        ms = (time.perf_counter() - start) * 1000
        emb = response.embedding
        if expected is not None and emb.preprocessing != expected:
            raise FailedPrecondition(
                f"the service at {address} runs preprocessing {emb.preprocessing!r}, not {expected!r}",
                reason="WRONG_PREPROCESSING",
            )
        return EmbedLine(
            path,
            emb.dimension,
            emb.backbone,
            emb.weights_hash,
            response.cache_hit,
            ms,
            response.content_hash,
            list(emb.values),
            emb.preprocessing,
        )

    return run, channel.close


def _local_embedder(backbone: str | None, preprocessing: str | None) -> tuple[Embedder, Callable[[], None]]:
    from hemascope.imaging.inputs import ImageInput
    from hemascope.imaging.preprocess import get_preprocessing
    from services.feature.core import FeatureCore
    from services.feature.settings import FeatureSettings

    overrides: dict[str, Any] = {"backbone": backbone} if backbone else {}
    if preprocessing:
        get_preprocessing(preprocessing)  # an unknown name is refused here, named as the option given
        overrides["preprocessing"] = preprocessing
    settings = FeatureSettings(**overrides)
    core = FeatureCore(settings)
    core.load()

    def run(path: str, data: bytes) -> EmbedLine:
        start = time.perf_counter()
        result = core.embed(ImageInput(data=data))
        ms = (time.perf_counter() - start) * 1000
        info = core.info
        return EmbedLine(
            path,
            int(result.vector.shape[0]),
            info.spec.name,
            info.weights_hash,
            result.cache_hit,
            ms,
            result.content_hash,
            result.vector.tolist(),
            info.preprocessing.version,
        )

    return run, core.close


def _print(line: EmbedLine, as_json: bool, with_vector: bool) -> None:
    if as_json:
        record = {
            "image": line.path,
            "dimension": line.dimension,
            "backbone": line.backbone,
            "weights_hash": line.weights_hash,
            "cache_hit": line.cache_hit,
            "ms": round(line.ms, 2),
            "content_hash": line.content_hash,
            "preprocessing": line.preprocessing,
        }
        if with_vector:
            record["embedding"] = line.values
        click.echo(json.dumps(record))
    else:
        hit = "hit " if line.cache_hit else "miss"
        click.echo(
            f"{line.path}: {line.dimension}-d {line.backbone} cache {hit} {line.ms:8.1f} ms "
            f"pixels {line.content_hash[:12]}"
        )


def run_embed(
    paths: list[str],
    *,
    address: str | None,
    backbone: str | None,
    as_json: bool,
    with_vector: bool,
    timeout: float,
    preprocessing: str | None = None,
) -> int:
    """Embeds each path and prints a line per image; returns the number of failures."""
    embedder, close = (
        _service_embedder(address, backbone, preprocessing, timeout)
        if address
        else _local_embedder(backbone, preprocessing)
    )
    failures = 0
    try:
        for path in paths:
            try:
                line = embedder(path, Path(path).read_bytes())
            except (OSError, grpc.RpcError, HemascopeError) as exc:
                check_reachable(exc, "feature", address)
                failures += 1
                print_image_error(path, exc, as_json)
                continue
            _print(line, as_json, with_vector)
    finally:
        close()
    return failures
