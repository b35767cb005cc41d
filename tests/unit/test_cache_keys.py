"""Unit tests for hemascope.cache: key rendering, value encoding, the in-memory LRU/TTL, the null cache and
the retry-after gate. No Redis needed."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY

from hemascope.cache import (
    CacheKey,
    EmbeddingCache,
    MemoryCache,
    NullCache,
    RedisCache,
    _RetryGate,
    build_cache,
    decode_vector,
    encode_vector,
)

CONTENT = hashlib.sha256(b"pixels").hexdigest()
WEIGHTS = hashlib.sha256(b"weights").hexdigest()


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_key(content: str = CONTENT, **changes: str) -> CacheKey:
    base = CacheKey(
        content_hash=content,
        backbone="efficientnet_lite0",
        weights_hash=WEIGHTS,
        preprocessing="rgb8-224-bilinear-imagenet.v1",
    )
    return dataclasses.replace(base, **changes)


def content_key(i: int) -> CacheKey:
    return make_key(hashlib.sha256(str(i).encode()).hexdigest())


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def sample(name: str, backend: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": backend, "outcome": outcome}) or 0.0


# --- keys -------------------------------------------------------------------------------------------------


def test_render_is_exactly_the_prefix_version_and_the_four_fields() -> None:
    key = make_key()
    assert key.render("hemascope:") == (
        f"hemascope:emb:v1:efficientnet_lite0:{WEIGHTS}:rgb8-224-bilinear-imagenet.v1:{CONTENT}"
    )


def test_render_respects_the_prefix() -> None:
    key = make_key()
    assert key.render("svc-a:").startswith("svc-a:emb:v1:")
    assert key.render("") == key.render("svc-a:").removeprefix("svc-a:")
    assert key.render("svc-a:") != key.render("svc-b:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("content_hash", hashlib.sha256(b"other pixels").hexdigest()),
        ("content_hash", CONTENT[:-1] + ("0" if CONTENT[-1] != "0" else "1")),
        ("backbone", "efficientnet_lite1"),
        ("weights_hash", hashlib.sha256(b"other weights").hexdigest()),
        ("weights_hash", WEIGHTS[:-1] + ("0" if WEIGHTS[-1] != "0" else "1")),  # differs only at the end
        ("preprocessing", "rgb8-224-bilinear-imagenet.v2"),
    ],
)
def test_any_field_change_changes_the_key(field: str, value: str) -> None:
    assert make_key().render("p:") != make_key(**{field: value}).render("p:")


def test_equal_fields_give_equal_keys() -> None:
    assert make_key().render("p:") == make_key().render("p:")
    assert make_key() == make_key()
    assert hash(make_key()) == hash(make_key())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("content_hash", ""),
        ("content_hash", "XYZ"),
        ("content_hash", CONTENT.upper()),
        ("weights_hash", "abc:def"),
        ("backbone", ""),
        ("backbone", "a:b"),
        ("backbone", "efficient net"),
        ("preprocessing", "v1\n"),
        ("preprocessing", "x:y"),
    ],
)
def test_ambiguous_or_malformed_fields_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_key(**{field: value})


def test_key_is_frozen() -> None:
    key = make_key()
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.backbone = "other"  # type: ignore[misc]


# --- encoding ---------------------------------------------------------------------------------------------


def test_values_are_little_endian_float32() -> None:
    data = encode_vector(np.array([1.0, -2.5], dtype=np.float64))
    assert data == np.array([1.0, -2.5], dtype="<f4").tobytes()
    out = decode_vector(data)
    assert out is not None
    assert out.dtype == np.float32
    assert out.tolist() == [1.0, -2.5]
    assert out.flags.writeable


@pytest.mark.parametrize(
    ("data", "dim"), [(b"", None), (b"\x00\x00\x80", None), (b"\x00" * 9, None), (b"\x00" * 8, 3)]
)
def test_impossible_lengths_decode_to_none(data: bytes, dim: int | None) -> None:
    assert decode_vector(data, dim) is None


@pytest.mark.parametrize("bad", [np.zeros((2, 2), np.float32), np.zeros(0, np.float32), np.float32(1.0)])
def test_only_non_empty_1d_vectors_can_be_stored(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="non-empty 1-D"):
        encode_vector(bad)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        MemoryCache().put(make_key(), bad)


# --- memory cache -----------------------------------------------------------------------------------------


def test_memory_round_trip_and_stats() -> None:
    cache = MemoryCache(10)
    assert cache.backend == "memory"
    assert cache.get(make_key()) is None
    cache.put(make_key(), vec(1, 2, 3))
    out = cache.get(make_key())
    assert out is not None
    assert out.dtype == np.float32
    assert out.ndim == 1
    assert np.array_equal(out, vec(1, 2, 3))
    assert cache.stats() == {"hits": 1, "misses": 1, "errors": 0, "writes": 1, "skipped": 0, "corrupt": 0}


def test_memory_lru_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    a, b, c = content_key(1), content_key(2), content_key(3)
    cache.put(a, vec(1))
    cache.put(b, vec(2))
    assert cache.get(a) is not None  # a is now more recent than b
    cache.put(c, vec(3))
    assert len(cache) == 2
    assert cache.get(b) is None
    assert cache.get(a) is not None
    assert cache.get(c) is not None


def test_memory_put_of_existing_key_refreshes_recency_and_value() -> None:
    cache = MemoryCache(max_entries=2)
    a, b, c = content_key(1), content_key(2), content_key(3)
    cache.put(a, vec(1))
    cache.put(b, vec(2))
    cache.put(a, vec(10))
    cache.put(c, vec(3))
    assert cache.get(b) is None
    out = cache.get(a)
    assert out is not None
    assert out.tolist() == [10.0]


def test_memory_ttl_expires_with_injected_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(10, ttl_s=10, clock=clock)
    cache.put(make_key(), vec(1))
    clock.advance(9.9)
    assert cache.get(make_key()) is not None
    clock.advance(0.1)
    assert cache.get(make_key()) is None
    assert len(cache) == 0  # the expired entry was dropped


@pytest.mark.parametrize("ttl", [None, 0])
def test_memory_without_ttl_never_expires(ttl: float | None) -> None:
    clock = FakeClock()
    cache = MemoryCache(10, ttl_s=ttl, clock=clock)
    cache.put(make_key(), vec(1))
    clock.advance(10**9)
    assert cache.get(make_key()) is not None


def test_memory_put_copies_and_get_returns_fresh_arrays() -> None:
    cache = MemoryCache(10)
    original = vec(1, 2, 3)
    cache.put(make_key(), original)
    original[0] = 99  # the caller mutates its own array after put
    first = cache.get(make_key())
    assert first is not None
    assert first.tolist() == [1, 2, 3]
    first[1] = 42  # the caller mutates the array it got back
    second = cache.get(make_key())
    assert second is not None
    assert second.tolist() == [1, 2, 3]
    assert not np.shares_memory(first, second)


def test_memory_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(0)
    with pytest.raises(ValueError, match="ttl_s"):
        MemoryCache(10, ttl_s=-1)


def test_memory_close_empties_it() -> None:
    cache = MemoryCache(10)
    cache.put(make_key(), vec(1))
    cache.close()
    assert len(cache) == 0


def test_memory_is_thread_safe_under_contention() -> None:
    cache = MemoryCache(max_entries=50)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(400):
                key = content_key((seed * 7 + i) % 120)
                cache.put(key, vec(float(i)))
                out = cache.get(key)
                assert out is None or out.shape == (1,)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) <= 50
    stats = cache.stats()
    assert stats["writes"] == 8 * 400
    assert stats["hits"] + stats["misses"] == 8 * 400


def test_memory_metrics_are_exported() -> None:
    cache = MemoryCache(10)
    hits = sample("hemascope_cache_requests_total", "memory", "hit")
    misses = sample("hemascope_cache_requests_total", "memory", "miss")
    writes = sample("hemascope_cache_writes_total", "memory", "ok")
    cache.get(make_key())
    cache.put(make_key(), vec(1))
    cache.get(make_key())
    assert sample("hemascope_cache_requests_total", "memory", "hit") == hits + 1
    assert sample("hemascope_cache_requests_total", "memory", "miss") == misses + 1
    assert sample("hemascope_cache_writes_total", "memory", "ok") == writes + 1


# --- null cache -------------------------------------------------------------------------------------------


def test_null_cache_always_misses() -> None:
    cache = NullCache()
    assert cache.backend == "none"
    skipped = sample("hemascope_cache_writes_total", "none", "skipped")
    cache.put(make_key(), vec(1))
    assert cache.get(make_key()) is None
    assert cache.stats()["misses"] == 1
    assert cache.stats()["skipped"] == 1
    assert cache.stats()["writes"] == 0
    assert sample("hemascope_cache_writes_total", "none", "skipped") == skipped + 1
    cache.close()


# --- factory and protocol ---------------------------------------------------------------------------------


def test_build_cache_picks_the_backend() -> None:
    memory = build_cache(None, memory_entries=5)
    assert isinstance(memory, MemoryCache)
    assert memory.backend == "memory"
    assert isinstance(build_cache("", memory_entries=5), MemoryCache)
    assert isinstance(build_cache(None, memory_entries=0), NullCache)
    # Building a Redis cache does not connect, so a Redis that is down at start-up is not fatal.
    redis_cache = build_cache("redis://127.0.0.1:1/15", prefix="unit:")
    try:
        assert isinstance(redis_cache, RedisCache)
        assert redis_cache.backend == "redis"
        assert redis_cache.available
    finally:
        redis_cache.close()


def test_every_backend_satisfies_the_protocol() -> None:
    caches: list[EmbeddingCache] = [MemoryCache(1), NullCache(), RedisCache("redis://127.0.0.1:1/15")]
    try:
        for cache in caches:
            assert isinstance(cache, EmbeddingCache)
    finally:
        for cache in caches:
            cache.close()


def test_build_cache_memory_uses_the_ttl() -> None:
    cache = build_cache(None, ttl_s=0, memory_entries=3)
    assert isinstance(cache, MemoryCache)
    cache.put(make_key(), vec(1))
    assert cache.get(make_key()) is not None


# --- retry-after gate -------------------------------------------------------------------------------------


def test_gate_closes_after_a_failure_and_lets_one_probe_through_after_the_window() -> None:
    clock = FakeClock()
    gate = _RetryGate(1.0, clock)
    assert gate.allow()
    assert gate.available
    assert gate.failed() is True  # newly down: log once
    assert gate.failed() is False  # still down: do not log again
    assert not gate.available
    clock.advance(0.5)
    assert not gate.allow()
    clock.advance(0.5)
    assert gate.allow()  # the probe
    assert not gate.allow()  # everyone else waits for the probe's window
    assert gate.succeeded() is True  # recovered: log once
    assert gate.allow()
    assert gate.available
    assert gate.succeeded() is False
