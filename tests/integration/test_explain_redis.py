"""The explain cache in the real Redis (127.0.0.1:6379, database 15, a key prefix of its own, deleted
after), and a dead Redis: explanations still answer, as misses."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from hemascope.cache.seal import Sealer
from hemascope.data import REPO_ROOT
from hemascope.imaging.inputs import ImageInput
from services.explain.cache import CachedHeat
from services.explain.core import ExplainCore
from services.explain.settings import ExplainSettings

URL = "redis://127.0.0.1:6379/15"
BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-explain-{uuid.uuid4().hex[:12]}:"
    yield name
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "cache.key"
    path.write_text("c" * 64)
    return path


def make_core(url: str, prefix: str, key_file: Path | None = None) -> ExplainCore:
    settings = ExplainSettings(
        bundle=BUNDLE, metrics_port=None, redis_url=url, cache_prefix=prefix, cache_key_file=key_file
    )
    core = ExplainCore(settings)
    core.load()
    return core


@pytest.fixture(scope="module")
def cell(data_dir: Path) -> bytes:
    return sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0].read_bytes()


def test_second_call_is_a_hit_from_redis_and_keys_hold_no_image(
    prefix: str, cell: bytes, one_thread: None, key_file: Path
) -> None:
    first_core = make_core(URL, prefix, key_file)
    try:
        first = first_core.explain(ImageInput(data=cell, image_id="patient-42"), "logistic_regression")
        assert first_core.cache.backend == "redis" and not first.cache_hit
    finally:
        first_core.close()
    client = redis.Redis.from_url(URL)
    keys = [key.decode() for key in client.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 1 and keys[0].startswith(f"{prefix}cam:v1:") and first.content_hash in keys[0]
    assert "patient-42" not in keys[0] and "logistic_regression" in keys[0]
    stored = client.get(keys[0])
    assert isinstance(stored, bytes) and len(stored) < 4096 and b"patient-42" not in stored
    assert client.ttl(keys[0]) > 0
    payload = Sealer.from_file(key_file).open(keys[0], stored)  # sealed for its key with the cache key
    value = CachedHeat.decode(payload or b"")
    assert value is not None and np.array_equal(value.heatmap, first.heatmap)
    # another replica (a fresh core with the same cache key) answers from Redis
    second_core = make_core(URL, prefix, key_file)
    try:
        second = second_core.explain(ImageInput(data=cell), "logistic_regression")
        assert second.cache_hit and np.array_equal(second.heatmap, first.heatmap)
        assert second.overlay_png == first.overlay_png and second.class_name == first.class_name
        # a corrupt or forged stored value is a miss, recomputed and overwritten
        for forged in (b"garbage", Sealer(b"x" * 32).seal(keys[0], CachedHeat.encode(value))):
            client.set(keys[0], forged)
            third = second_core.explain(ImageInput(data=cell), "logistic_regression")
            assert not third.cache_hit
            rewritten = client.get(keys[0])
            assert isinstance(rewritten, bytes) and Sealer.from_file(key_file).open(keys[0], rewritten)
    finally:
        second_core.close()
        client.close()


def test_a_dead_redis_means_misses_not_errors(prefix: str, cell: bytes, one_thread: None) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    core = make_core(f"redis://127.0.0.1:{port}/15", prefix)
    try:
        first = core.explain(ImageInput(data=cell), "logistic_regression")
        second = core.explain(ImageInput(data=cell), "logistic_regression")
        assert not first.cache_hit and not second.cache_hit
        assert np.array_equal(first.heatmap, second.heatmap)
    finally:
        core.close()
