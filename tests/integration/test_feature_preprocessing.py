"""The feature service with a preprocessing option chosen by environment: provenance, cache keys, errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from hemascope.errors import ConfigurationError
from hemascope.imaging.preprocess import PREPROCESSING, STUDY_PREPROCESSING
from hemascope.server import ManagedServer
from hemascope.training.embed import PreprocessingMismatch, embed_paths
from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc
from services.feature.server import create_server
from services.feature.settings import FeatureSettings

REDIS_DB = 15
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"hemascope-test-prep-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(autouse=True)
def imagenet_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """These options are served by the frozen ImageNet backbone (the fine-tuned one serves only its own)."""
    monkeypatch.setenv("HEMASCOPE_FEATURE_BACKBONE", "efficientnet_lite0")


def _start(model_cache_dir: Path, prefix: str) -> tuple[ManagedServer, int]:
    settings = FeatureSettings(
        port=0,
        metrics_port=None,
        model_cache_dir=model_cache_dir,
        redis_url=URL,
        cache_prefix=prefix,
        cache_ttl_s=600,
        log_json=False,
    )
    server, port = create_server(settings)
    server.wait_ready(180)
    return server, port


def _embed(channel: grpc.Channel, data: bytes) -> feature_pb2.EmbedResponse:
    stub = feature_pb2_grpc.FeatureServiceStub(channel)
    return stub.Embed(feature_pb2.EmbedRequest(image=common_pb2.Image(data=data)), timeout=60)


def test_cellcrop_from_env_gives_its_own_embedding_provenance_and_cache_key(
    model_cache_dir: Path,
    redis_prefix: str,
    real_images: list[Path],
    channel_to: Callable[[int], grpc.Channel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = real_images[8].read_bytes()  # a Munich neutrophil
    monkeypatch.setenv("HEMASCOPE_FEATURE_PREPROCESSING", "plain")
    plain_server, plain_port = _start(model_cache_dir, redis_prefix)
    monkeypatch.setenv("HEMASCOPE_FEATURE_PREPROCESSING", "cellcrop")
    crop_server, crop_port = _start(model_cache_dir, redis_prefix)
    try:
        plain = _embed(channel_to(plain_port), data)
        crop = _embed(channel_to(crop_port), data)  # same pixels, same Redis: must still be a miss
        crop_again = _embed(channel_to(crop_port), data)
        info = feature_pb2_grpc.FeatureServiceStub(channel_to(crop_port)).GetBackboneInfo(
            feature_pb2.GetBackboneInfoRequest(), timeout=10
        )
    finally:
        plain_server.stop(0)
        crop_server.stop(0)
    cellcrop = PREPROCESSING["cellcrop"].version
    assert plain.embedding.preprocessing == STUDY_PREPROCESSING.version == "rgb-224-bilinear-aa-imagenet.v1"
    assert crop.embedding.preprocessing == cellcrop == info.preprocessing
    assert plain.content_hash == crop.content_hash
    assert not plain.cache_hit and not crop.cache_hit and crop_again.cache_hit
    a, b = np.asarray(plain.embedding.values), np.asarray(crop.embedding.values)
    assert a.shape == b.shape == (1280,)
    cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cosine < 0.99, cosine
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = sorted(k.decode() for k in client.scan_iter(f"{redis_prefix}*"))
    client.close()
    assert len(keys) == 2
    assert {k.split(":")[-2] for k in keys} == {STUDY_PREPROCESSING.version, cellcrop}


def test_unknown_option_fails_at_load(model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_PREPROCESSING", "sepia")
    settings = FeatureSettings(port=0, metrics_port=None, model_cache_dir=model_cache_dir, log_json=False)
    server, _ = create_server(settings)
    try:
        with pytest.raises(ConfigurationError, match="sepia") as caught:
            server.wait_ready(60)
        assert caught.value.reason == "UNKNOWN_PREPROCESSING"
    finally:
        server.stop(0)


def test_embed_paths_checks_the_service_option(
    model_cache_dir: Path, redis_prefix: str, real_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_PREPROCESSING", "cellcrop-gray")
    server, port = _start(model_cache_dir, redis_prefix)
    try:
        address = f"127.0.0.1:{port}"
        with pytest.raises(PreprocessingMismatch, match="cellcrop-gray"):
            embed_paths(real_images[:1], address=address, preprocessing="plain", progress=False)
        remote = embed_paths(real_images[:2], address=address, preprocessing="cellcrop-gray", progress=False)
    finally:
        server.stop(0)
    assert remote.preprocessing == PREPROCESSING["cellcrop-gray"].version
    monkeypatch.setenv("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache_dir))
    monkeypatch.delenv("HEMASCOPE_FEATURE_PREPROCESSING")
    local = embed_paths(real_images[:2], preprocessing="cellcrop-gray", progress=False)
    assert local.preprocessing == remote.preprocessing
    np.testing.assert_allclose(local.vectors, remote.vectors, rtol=1e-4, atol=1e-4)
