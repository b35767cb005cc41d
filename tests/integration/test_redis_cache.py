"""Integration tests for hemascope.cache.RedisCache against real Redis servers.

* the shared Redis at 127.0.0.1:6379, database 15, with a unique key prefix per test (keys deleted after);
* a dead port (nothing listening) and a "silent" TCP server that accepts connections and never answers;
* a throwaway ``redis-server`` subprocess that is killed and restarted on the same port.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from hemascope.cache import CacheKey, RedisCache, build_cache
from hemascope.cache.seal import Sealer
from hemascope.errors import ConfigurationError

SHARED_URL = "redis://127.0.0.1:6379/15"
LOGGER = "hemascope.cache"
T = TypeVar("T")


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_key(i: int = 0) -> CacheKey:
    return CacheKey(
        content_hash=hashlib.sha256(f"pixels-{i}".encode()).hexdigest(),
        backbone="efficientnet_lite0",
        weights_hash=hashlib.sha256(b"weights").hexdigest(),
        preprocessing="rgb8-224-bilinear-imagenet.v1",
    )


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def error_requests() -> float:
    return (
        REGISTRY.get_sample_value("hemascope_cache_requests_total", {"backend": "redis", "outcome": "error"})
        or 0.0
    )


def free_port() -> int:
    """A TCP port that nothing listens on (bound, read, and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float]:
    """Call ``fn(*args)``; return its result and the seconds it took."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def shared_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"shared Redis at {SHARED_URL} is not reachable: {exc}")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def prefix(shared_client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    value = f"hemascope-test:{uuid.uuid4().hex}:"
    try:
        yield value
    finally:
        keys = list(shared_client.scan_iter(match=f"{value}*", count=1000))
        if keys:
            shared_client.delete(*keys)


@pytest.fixture
def shared_cache(prefix: str) -> Iterator[RedisCache]:
    cache = RedisCache(SHARED_URL, prefix=prefix, ttl_s=120, timeout_s=1.0, retry_after_s=1.0)
    try:
        yield cache
    finally:
        cache.close()


class SilentServer:
    """Accepts TCP connections and never answers: a Redis that is hung or unreachably slow."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-redis", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


class RedisProcess:
    """A throwaway, non-persistent ``redis-server`` on a fixed port that can be killed and restarted."""

    def __init__(self, binary: str, workdir: Path, password: str | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", str(self.workdir), "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=0.2,
            socket_connect_timeout=0.2,
        )
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                assert self.proc.poll() is None, "redis-server exited at start-up"
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.02)
            raise RuntimeError(f"redis-server on port {self.port} did not become ready")
        finally:
            probe.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed, so Redis cannot be stopped and restarted")
    server = RedisProcess(binary, tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()


# --- shared Redis -----------------------------------------------------------------------------------------


def test_round_trip_is_bitwise_equal(
    shared_cache: RedisCache, shared_client: redis.Redis, prefix: str
) -> None:
    rng = np.random.default_rng(0)
    vector = np.concatenate(
        [rng.standard_normal(1280).astype(np.float32), vec(-0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38)]
    )
    shared_cache.put(make_key(), vector)
    out = shared_cache.get(make_key())
    assert out is not None
    assert out.dtype == np.float32
    assert out.ndim == 1
    assert out.shape == vector.shape
    assert out.tobytes() == vector.tobytes()
    stored = shared_client.get(make_key().render(prefix))
    assert isinstance(stored, bytes)
    assert stored.startswith(b"hs1") and stored.endswith(vector.astype("<f4").tobytes())  # sealed
    assert shared_cache.stats()["hits"] == 1
    assert shared_cache.stats()["writes"] == 1


def test_put_copies_and_get_returns_a_fresh_array(shared_cache: RedisCache) -> None:
    vector = vec(1, 2, 3)
    shared_cache.put(make_key(), vector)
    vector[0] = 99
    first = shared_cache.get(make_key())
    assert first is not None
    assert first.tolist() == [1, 2, 3]
    first[0] = 42
    second = shared_cache.get(make_key())
    assert second is not None
    assert second.tolist() == [1, 2, 3]


def test_entries_get_the_ttl(shared_cache: RedisCache, shared_client: redis.Redis, prefix: str) -> None:
    shared_cache.put(make_key(), vec(1, 2))
    ttl = shared_client.ttl(make_key().render(prefix))
    assert 0 < ttl <= 120


def test_lost_key_is_a_miss_not_an_error(
    shared_cache: RedisCache, shared_client: redis.Redis, prefix: str
) -> None:
    shared_cache.put(make_key(), vec(1, 2))
    shared_client.delete(make_key().render(prefix))  # what FLUSHDB or an eviction does to this key
    assert shared_cache.get(make_key()) is None
    stats = shared_cache.stats()
    assert stats["misses"] == 1
    assert stats["errors"] == 0
    assert shared_cache.available


def test_corrupt_value_is_an_error_free_miss_and_is_deleted(
    shared_cache: RedisCache, shared_client: redis.Redis, prefix: str
) -> None:
    name = make_key().render(prefix)
    shared_client.set(name, b"\x00" * 7)
    assert shared_cache.get(make_key()) is None
    stats = shared_cache.stats()
    assert stats["misses"] == 1
    assert stats["errors"] == 0
    assert stats["corrupt"] == 1
    assert shared_client.exists(name) == 0
    # The next put repairs the entry.
    shared_cache.put(make_key(), vec(5))
    out = shared_cache.get(make_key())
    assert out is not None
    assert out.tolist() == [5.0]


def test_error_reply_is_counted_but_does_not_back_off(
    shared_cache: RedisCache, shared_client: redis.Redis, prefix: str
) -> None:
    shared_client.rpush(make_key().render(prefix), b"not a string")  # GET on it replies WRONGTYPE
    assert shared_cache.get(make_key()) is None
    assert shared_cache.stats()["errors"] == 1
    assert shared_cache.available  # the server answered: it is up, so no retry-after window
    shared_cache.put(make_key(1), vec(1))
    assert shared_cache.get(make_key(1)) is not None
    assert shared_cache.stats()["skipped"] == 0


def test_value_of_the_wrong_dimension_is_corrupt(shared_client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(SHARED_URL, prefix=prefix, ttl_s=60, timeout_s=1.0, dim=4)
    try:
        shared_client.set(make_key().render(prefix), vec(1, 2, 3).tobytes())
        assert cache.get(make_key()) is None
        assert cache.stats()["corrupt"] == 1
        assert cache.stats()["errors"] == 0
        cache.put(make_key(), vec(1, 2, 3, 4))
        assert cache.get(make_key()) is not None
    finally:
        cache.close()


def test_prefixes_isolate_caches(shared_client: redis.Redis, prefix: str) -> None:
    a = RedisCache(SHARED_URL, prefix=f"{prefix}a:", ttl_s=60, timeout_s=1.0)
    b = RedisCache(SHARED_URL, prefix=f"{prefix}b:", ttl_s=60, timeout_s=1.0)
    try:
        a.put(make_key(), vec(1))
        assert b.get(make_key()) is None
        assert a.get(make_key()) is not None
    finally:
        a.close()
        b.close()


def test_build_cache_returns_a_working_redis_cache(prefix: str) -> None:
    cache = build_cache(SHARED_URL, prefix=prefix, ttl_s=60, redis_timeout_s=1.0)
    try:
        assert cache.backend == "redis"
        cache.put(make_key(), vec(1, 2))
        out = cache.get(make_key())
        assert out is not None
        assert out.tolist() == [1.0, 2.0]
    finally:
        cache.close()


def test_concurrent_use_from_many_threads(shared_cache: RedisCache) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                key = make_key(n * 1000 + i)
                shared_cache.put(key, vec(float(n), float(i)))
                out = shared_cache.get(key)
                assert out is not None
                assert out.tolist() == [float(n), float(i)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert shared_cache.stats()["hits"] == 200
    assert shared_cache.stats()["errors"] == 0


# --- Redis unreachable ------------------------------------------------------------------------------------


def test_dead_port_never_raises_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/15", timeout_s=0.05, retry_after_s=1.0, clock=clock)
    before = error_requests()
    try:
        assert cache.get(make_key()) is None
        assert cache.stats()["errors"] == 1
        assert not cache.available
        assert error_requests() == before + 1

        # Within retry_after_s nothing is sent to Redis: skipped, not another error.
        (result, elapsed) = timed(cache.get, make_key())
        assert result is None
        assert elapsed < 0.05
        cache.put(make_key(), vec(1))  # must not raise
        assert cache.stats()["errors"] == 1
        assert cache.stats()["skipped"] == 2

        # After the window it tries again by itself.
        clock.advance(1.0)
        cache.put(make_key(), vec(1))
        assert cache.stats()["errors"] == 2
        assert cache.stats()["writes"] == 0
    finally:
        cache.close()
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()


def test_silent_server_times_out_once_then_skips(silent_server: SilentServer) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{silent_server.port}/15", timeout_s=0.3, retry_after_s=30.0)
    try:
        (result, elapsed) = timed(cache.get, make_key())
        assert result is None
        assert 0.25 <= elapsed < 2.0, "one bounded timeout, no retries"
        assert cache.stats()["errors"] == 1
        connections = len(silent_server.accepted)

        (result, elapsed) = timed(cache.get, make_key())
        assert result is None
        assert elapsed < 0.1
        (_, elapsed) = timed(cache.put, make_key(), vec(1))
        assert elapsed < 0.1
        assert cache.stats()["errors"] == 1
        assert cache.stats()["skipped"] == 2
        assert len(silent_server.accepted) == connections  # it did not even try
    finally:
        cache.close()


# --- Redis goes away and comes back -----------------------------------------------------------------------


def test_recovers_after_redis_restarts(redis_process: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = RedisCache(redis_process.url, prefix="recovery:", ttl_s=60, timeout_s=0.2, retry_after_s=0.2)
    try:
        cache.put(make_key(), vec(1, 2))
        assert cache.get(make_key()) is not None

        redis_process.kill()
        assert cache.get(make_key()) is None  # no raise
        cache.put(make_key(), vec(3))  # no raise
        assert cache.stats()["errors"] == 1
        assert not cache.available

        redis_process.start()  # same port, empty (nothing persisted)
        time.sleep(0.25)  # let the retry-after window pass
        assert cache.get(make_key()) is None  # a plain miss now: Redis is back
        assert cache.available
        cache.put(make_key(), vec(4, 5))
        out = cache.get(make_key())
        assert out is not None
        assert out.tolist() == [4.0, 5.0]
        assert cache.stats()["errors"] == 1
    finally:
        cache.close()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [m for lvl, m in messages if lvl == logging.WARNING and "unavailable" in m] != []
    assert len([m for lvl, m in messages if lvl == logging.WARNING]) == 1
    assert len([m for lvl, m in messages if lvl == logging.INFO and "available again" in m]) == 1


def test_threads_survive_an_outage(redis_process: RedisProcess) -> None:
    cache = RedisCache(redis_process.url, prefix="outage:", ttl_s=60, timeout_s=0.1, retry_after_s=0.1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                key = make_key(n * 100_000 + i % 50)
                cache.put(key, vec(float(n)))
                cache.get(key)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.2)
        redis_process.kill()
        time.sleep(0.4)
        redis_process.start()
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    try:
        assert not errors
        stats = cache.stats()
        assert stats["errors"] >= 1
        assert stats["skipped"] >= 1
        # Only one probe per window is sent while Redis is down, so errors stay few despite many calls.
        assert stats["errors"] < stats["skipped"]
        cache.put(make_key(), vec(7))
        out = cache.get(make_key())
        assert out is not None
        assert out.tolist() == [7.0]
    finally:
        cache.close()


# --- authenticated values and a password --------------------------------------------------------------------


def test_a_poisoned_entry_is_refused_as_a_miss(
    shared_client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    """Whoever can write to Redis cannot choose an image's embedding: another image's sealed value moved
    under its key, a plain vector of the right size, or a value sealed with another secret are all misses
    (counted as corrupt and deleted)."""
    key_file = tmp_path / "cache.key"
    key_file.write_text("k" * 64)
    cache = RedisCache(SHARED_URL, prefix=prefix, timeout_s=1.0, dim=3, sealer=Sealer.from_file(key_file))
    rogue = RedisCache(SHARED_URL, prefix=prefix, timeout_s=1.0, dim=3, sealer=Sealer(b"r" * 32))
    myeloblast, basophil = make_key(1), make_key(2)
    try:
        cache.put(myeloblast, vec(1, 0, 0))
        cache.put(basophil, vec(0, 1, 0))
        attacks = [
            shared_client.get(basophil.render(prefix)),  # a genuine value, moved to another key
            vec(0, 1, 0).astype("<f4").tobytes(),  # a bare vector
        ]
        for forged in attacks:
            assert isinstance(forged, bytes)
            shared_client.set(myeloblast.render(prefix), forged)
            assert cache.get(myeloblast) is None
            assert shared_client.get(myeloblast.render(prefix)) is None  # deleted
        rogue.put(myeloblast, vec(0, 1, 0))  # sealed, but not with the service's secret
        assert cache.get(myeloblast) is None
        assert cache.stats()["corrupt"] == 3 and cache.stats()["hits"] == 0
        cache.put(myeloblast, vec(1, 0, 0))
        again = cache.get(myeloblast)
        assert again is not None and again.tolist() == [1, 0, 0]
        shared = RedisCache(SHARED_URL, prefix=prefix, timeout_s=1.0, sealer=Sealer.from_file(key_file))
        try:  # replicas with the same key file share the cache
            assert shared.get(basophil) is not None
        finally:
            shared.close()
    finally:
        cache.close()
        rogue.close()


def test_a_short_or_missing_cache_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("too short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        Sealer.from_file(short)
    with pytest.raises(ConfigurationError, match="cannot read"):
        Sealer.from_file(tmp_path / "absent.key")


def test_a_password_protected_redis_is_used_with_its_password(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed")
    server = RedisProcess(binary, tmp_path, password="s3cret-pass")
    server.start()
    try:
        with_password = RedisCache(server.url, timeout_s=1.0, password="s3cret-pass")
        without = RedisCache(server.url, timeout_s=1.0)
        try:
            with_password.put(make_key(), vec(1, 2))
            assert with_password.get(make_key()) is not None
            assert without.get(make_key()) is None
            assert without.stats()["errors"] == 1  # refused by Redis: served as a miss, never an error
        finally:
            with_password.close()
            without.close()
    finally:
        server.kill()
