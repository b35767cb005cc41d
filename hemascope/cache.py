"""Embedding cache for the feature-embedding service.

An embedding is a pure function of (decoded pixels, backbone, weights, preprocessing), so it can be cached
under a key built from exactly those four things (:class:`CacheKey`) and nothing else: keys hold hashes and
version strings, never image bytes or caller identifiers.

Three backends share the :class:`EmbeddingCache` protocol:

* :class:`MemoryCache` -- an in-process, thread-safe LRU with an optional TTL;
* :class:`RedisCache` -- a shared Redis, values stored with ``SET ... EX ttl``;
* :class:`NullCache` -- always misses (caching switched off).

The cache is an optimisation, never a dependency: :class:`RedisCache` never raises out of ``get``/``put``
because Redis is down, slow, flushed or returns garbage. Such calls count an error and behave as a miss
(or a skipped write). After a connection-level failure Redis is left alone for ``retry_after_s`` seconds,
so a dead Redis costs at most one timeout per window rather than one per request, and then it is probed
again automatically: when Redis comes back, hits resume without a restart.

Values are little-endian float32 bytes. ``put`` copies the caller's array and ``get`` returns a fresh
float32 1-D array, so neither side can mutate the other's data.

Metrics (``prometheus_client``, module level):

* ``hemascope_cache_requests_total{backend, outcome}`` -- ``get`` calls; outcome is ``hit``, ``miss`` or
  ``error`` (Redis failed, or was not consulted because it is in its retry-after window);
* ``hemascope_cache_writes_total{backend, outcome}`` -- ``put`` calls; outcome is ``ok``, ``error`` or
  ``skipped`` (Redis in its retry-after window, or the null backend).

Each cache also keeps plain counters, returned by ``stats()``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import redis
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "CACHE_REQUESTS",
    "CACHE_WRITES",
    "CacheKey",
    "EmbeddingCache",
    "MemoryCache",
    "NullCache",
    "RedisCache",
    "build_cache",
]

log = logging.getLogger(__name__)

#: Version of the key layout and value encoding; bump it to orphan every existing entry.
KEY_VERSION = "v1"

#: ``time.monotonic``-like clock, injectable for tests.
Clock = Callable[[], float]
Vector = npt.NDArray[np.float32]

CACHE_REQUESTS = Counter(
    "hemascope_cache_requests_total",
    "Embedding cache lookups by backend and outcome (hit, miss, error).",
    ["backend", "outcome"],
)
CACHE_WRITES = Counter(
    "hemascope_cache_writes_total",
    "Embedding cache writes by backend and outcome (ok, error, skipped).",
    ["backend", "outcome"],
)

_GET_OUTCOMES = ("hit", "miss", "error")
_PUT_OUTCOMES = ("ok", "error", "skipped")

_HEX_RE = re.compile(r"[0-9a-f]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._-]+")

#: Exceptions that mean "Redis did not do it"; they never escape ``RedisCache.get``/``put``.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

_ENCODING = "<f4"
_ITEM_BYTES = 4


@dataclass(frozen=True)
class CacheKey:
    """Everything an embedding depends on, and nothing else.

    ``content_hash`` and ``weights_hash`` are lowercase hex digests (sha256 of the decoded pixels and of the
    weights file); ``backbone`` and ``preprocessing`` are identifiers made of letters, digits, ``.``, ``_``
    and ``-``. The restricted alphabets keep the ``:``-separated rendering unambiguous, so two different
    keys can never render to the same string.
    """

    content_hash: str
    backbone: str
    weights_hash: str
    preprocessing: str

    def __post_init__(self) -> None:
        _require(_HEX_RE, "content_hash", self.content_hash, "a lowercase hex digest")
        _require(_HEX_RE, "weights_hash", self.weights_hash, "a lowercase hex digest")
        _require(_TOKEN_RE, "backbone", self.backbone, "letters, digits, '.', '_' or '-'")
        _require(_TOKEN_RE, "preprocessing", self.preprocessing, "letters, digits, '.', '_' or '-'")

    def render(self, prefix: str) -> str:
        """Return the storage key.

        Layout: ``{prefix}emb:v1:{backbone}:{weights_hash}:{preprocessing}:{content_hash}``. The full weights
        hash is used, so a change to any character of any field changes the key.
        """
        return (
            f"{prefix}emb:{KEY_VERSION}:{self.backbone}:{self.weights_hash}:"
            f"{self.preprocessing}:{self.content_hash}"
        )


def _require(pattern: re.Pattern[str], name: str, value: str, expected: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a string made only of ``pattern``'s alphabet."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"CacheKey.{name} must be non-empty and made of {expected}")


@runtime_checkable
class EmbeddingCache(Protocol):
    """What the service needs from a cache. Implementations never raise because their store failed."""

    backend: str

    def get(self, key: CacheKey) -> Vector | None:
        """Return a fresh float32 1-D array, or ``None`` on a miss (or when the store is unavailable)."""
        ...

    def put(self, key: CacheKey, vector: npt.NDArray[Any]) -> None:
        """Store a copy of ``vector`` (best effort)."""
        ...

    def close(self) -> None:
        """Release resources; the cache must not be used afterwards."""
        ...


def encode_vector(vector: npt.NDArray[Any]) -> bytes:
    """Return ``vector`` as little-endian float32 bytes (a copy); ``ValueError`` unless 1-D and non-empty."""
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"embedding must be a non-empty 1-D array, got shape {array.shape}")
    return array.astype(_ENCODING).tobytes()


def decode_vector(data: bytes, dim: int | None = None) -> Vector | None:
    """Return a fresh float32 array from stored bytes, or ``None`` if their length is impossible."""
    if not data or len(data) % _ITEM_BYTES or (dim is not None and len(data) != dim * _ITEM_BYTES):
        return None
    return np.frombuffer(data, dtype=_ENCODING).astype(np.float32)


class _Instrumented:
    """Shared bookkeeping: Prometheus counters plus plain in-object counters for ``stats()``."""

    backend: str = "none"

    def __init__(self) -> None:
        self._stats_lock = threading.Lock()
        self._counts = dict.fromkeys(("hits", "misses", "errors", "writes", "skipped", "corrupt"), 0)
        for outcome in _GET_OUTCOMES:  # export zero-valued series so dashboards see them from the start
            CACHE_REQUESTS.labels(self.backend, outcome)
        for outcome in _PUT_OUTCOMES:
            CACHE_WRITES.labels(self.backend, outcome)

    def stats(self) -> dict[str, int]:
        """Return a snapshot: hits, misses, errors (failed store calls), writes (successful puts),
        skipped (calls not sent to the store because it is in its retry-after window, or a null put) and
        corrupt (stored values discarded because their length was impossible)."""
        with self._stats_lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self._counts[name] += 1

    def _record_get(self, outcome: str) -> None:
        CACHE_REQUESTS.labels(self.backend, outcome).inc()

    def _record_put(self, outcome: str) -> None:
        CACHE_WRITES.labels(self.backend, outcome).inc()

    def _hit(self, vector: Vector) -> Vector:
        self._count("hits")
        self._record_get("hit")
        return vector

    def _miss(self) -> None:
        self._count("misses")
        self._record_get("miss")


class NullCache(_Instrumented):
    """A cache that stores nothing: every ``get`` misses, every ``put`` is skipped."""

    backend = "none"

    def get(self, key: CacheKey) -> Vector | None:
        """Always ``None``."""
        self._miss()
        return None

    def put(self, key: CacheKey, vector: npt.NDArray[Any]) -> None:
        """Do nothing (counted as a skipped write)."""
        self._count("skipped")
        self._record_put("skipped")

    def close(self) -> None:
        """Nothing to release."""


class MemoryCache(_Instrumented):
    """In-process LRU of at most ``max_entries`` embeddings, each living ``ttl_s`` seconds (None/0: forever).

    Thread-safe: one lock guards the ordered dict. Entries are stored as immutable bytes, so callers can
    neither mutate a stored value through the array they put nor through the array they got back.
    """

    backend = "memory"

    def __init__(
        self, max_entries: int = 10000, ttl_s: float | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        if ttl_s is not None and ttl_s < 0:
            raise ValueError("ttl_s must be >= 0 (0 or None: no expiry)")
        super().__init__()
        self._max_entries = max_entries
        self._ttl_s = ttl_s or None
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float | None, bytes]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: CacheKey) -> Vector | None:
        """Return the cached vector and mark it most recently used, or ``None`` if absent or expired."""
        data = self._lookup(key.render(""))
        vector = decode_vector(data) if data is not None else None
        if vector is None:
            self._miss()
            return None
        return self._hit(vector)

    def put(self, key: CacheKey, vector: npt.NDArray[Any]) -> None:
        """Store a copy of ``vector``, evicting least-recently-used entries beyond ``max_entries``."""
        data = encode_vector(vector)
        name = key.render("")
        expires_at = self._clock() + self._ttl_s if self._ttl_s else None
        with self._lock:
            self._entries[name] = (expires_at, data)
            self._entries.move_to_end(name)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        self._count("writes")
        self._record_put("ok")

    def close(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def _lookup(self, name: str) -> bytes | None:
        """Return the live entry's bytes (refreshing its LRU position), dropping it if it has expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            expires_at, data = entry
            if expires_at is not None and now >= expires_at:
                del self._entries[name]
                return None
            self._entries.move_to_end(name)
            return data


class _RetryGate:
    """Tracks whether Redis may be called: closed after a failure for ``retry_after_s`` seconds.

    When the window has passed, exactly one caller is let through as a probe (the window is pushed forward
    for everyone else), so a still-dead Redis costs one timeout per window even under concurrency.
    """

    def __init__(self, retry_after_s: float, clock: Clock) -> None:
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until: float | None = None

    @property
    def retry_after_s(self) -> float:
        """Seconds Redis is left alone after a failure."""
        return self._retry_after_s

    @property
    def available(self) -> bool:
        """True unless the last call failed (Redis is considered down until a probe succeeds)."""
        with self._lock:
            return self._down_until is None

    def allow(self) -> bool:
        """Return whether this caller may call Redis now."""
        with self._lock:
            if self._down_until is None:
                return True
            now = self._clock()
            if now < self._down_until:
                return False
            self._down_until = now + self._retry_after_s  # this caller probes; the rest keep skipping
            return True

    def succeeded(self) -> bool:
        """Record a successful call; return True if Redis was considered down (it has recovered)."""
        with self._lock:
            was_down = self._down_until is not None
            self._down_until = None
            return was_down

    def failed(self) -> bool:
        """Record a failed call; return True if Redis was considered up (it has just become unavailable)."""
        with self._lock:
            was_up = self._down_until is None
            self._down_until = self._clock() + self._retry_after_s
            return was_up


class RedisCache(_Instrumented):
    """Embedding cache in Redis, shared by every replica; entries expire after ``ttl_s`` seconds.

    Every socket operation is bounded by ``timeout_s``. A connection error is retried once at once (a pooled
    connection may have gone stale when Redis restarted); a timeout is not retried. Redis errors, timeouts
    and ``OSError`` never escape ``get``/``put``: they are counted, logged once per outage, and turned into
    a miss or a dropped write. After such a failure Redis is not called for ``retry_after_s`` seconds.

    An error *reply* from a live server (``redis.ResponseError``, e.g. ``OOM`` when Redis is full and does
    not evict) is counted as an error but does not start the retry-after window, because reads still work.

    ``dim``, if given, is the expected embedding length: stored values of another length count as corrupt.
    Thread-safe: redis-py's client and connection pool are, and the local state is lock-guarded.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "hemascope:",
        ttl_s: int | None = 7 * 24 * 3600,
        timeout_s: float = 0.05,
        retry_after_s: float = 1.0,
        dim: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl_s is not None and ttl_s < 0:
            raise ValueError("ttl_s must be >= 0 (0 or None: no expiry)")
        if timeout_s <= 0 or retry_after_s < 0:
            raise ValueError("timeout_s must be positive and retry_after_s non-negative")
        super().__init__()
        self._prefix = prefix
        self._ttl_s = int(ttl_s) if ttl_s else None
        self._dim = dim
        self._gate = _RetryGate(retry_after_s, clock)
        self._response_errors_reported: set[str] = set()
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )

    @property
    def available(self) -> bool:
        """False while Redis is considered down (between a failure and the next successful call)."""
        return self._gate.available

    def get(self, key: CacheKey) -> Vector | None:
        """Return the cached vector, or ``None`` on a miss, a corrupt value, or any Redis failure."""
        if not self._gate.allow():
            self._count("skipped")
            self._record_get("error")
            return None
        name = key.render(self._prefix)
        try:
            data = self._client.get(name)
        except _REDIS_ERRORS as exc:
            self._on_error("get", exc)
            self._record_get("error")
            return None
        self._on_success()
        if data is None:
            self._miss()
            return None
        vector = decode_vector(data, self._dim) if isinstance(data, bytes) else None
        if vector is None:
            self._discard_corrupt(name, data)
            self._miss()
            return None
        return self._hit(vector)

    def put(self, key: CacheKey, vector: npt.NDArray[Any]) -> None:
        """Store a copy of ``vector`` with the TTL; a failure or the retry-after window drops the write."""
        data = encode_vector(vector)
        if not self._gate.allow():
            self._count("skipped")
            self._record_put("skipped")
            return
        try:
            self._client.set(key.render(self._prefix), data, ex=self._ttl_s)
        except _REDIS_ERRORS as exc:
            self._on_error("put", exc)
            self._record_put("error")
            return
        self._on_success()
        self._count("writes")
        self._record_put("ok")

    def close(self) -> None:
        """Close the client and its connection pool."""
        try:
            self._client.close()
        except _REDIS_ERRORS as exc:
            log.debug("closing the Redis embedding cache failed: %s", type(exc).__name__)

    def _on_success(self) -> None:
        """Close the retry-after window; log when that ends an outage."""
        if self._gate.succeeded():
            log.info("Redis embedding cache is available again")

    def _on_error(self, op: str, exc: BaseException) -> None:
        """Count a failure; a connection-level one opens the retry-after window (logged once per outage)."""
        self._count("errors")
        if isinstance(exc, redis.ResponseError):
            self._report_response_error(op, exc)
            self._on_success()  # the server answered: it is up
            return
        if self._gate.failed():
            log.warning(
                "Redis embedding cache unavailable (%s during %s: %s); serving without it, retry in %.2fs",
                type(exc).__name__,
                op,
                exc,
                self._gate.retry_after_s,
            )
        else:
            log.debug("Redis embedding cache still unavailable (%s during %s)", type(exc).__name__, op)

    def _report_response_error(self, op: str, exc: redis.ResponseError) -> None:
        """Warn once per error kind (e.g. OOM) about error replies; later ones are logged at debug level."""
        kind = str(exc).split(" ", 1)[0] or type(exc).__name__
        with self._stats_lock:
            first = kind not in self._response_errors_reported
            self._response_errors_reported.add(kind)
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "Redis embedding cache %s failed with an error reply: %s", op, exc)

    def _discard_corrupt(self, name: str, data: object) -> None:
        """Count a stored value of impossible length and delete it (best effort)."""
        self._count("corrupt")
        size = len(data) if isinstance(data, bytes | str) else -1
        log.warning("discarding a corrupt embedding cache entry (%d bytes)", size)
        try:
            self._client.delete(name)
        except _REDIS_ERRORS as exc:
            log.debug("deleting a corrupt embedding cache entry failed: %s", type(exc).__name__)


def build_cache(
    redis_url: str | None,
    *,
    prefix: str = "hemascope:",
    ttl_s: int = 7 * 24 * 3600,
    memory_entries: int = 10000,
    redis_timeout_s: float = 0.05,
    retry_after_s: float = 1.0,
) -> EmbeddingCache:
    """Pick the backend: Redis if ``redis_url`` is set, else an in-memory LRU, else (``memory_entries`` <= 0)
    no cache. Nothing connects here, so a Redis that is down at start-up does not stop the service."""
    if redis_url and redis_url.strip():
        cache: EmbeddingCache = RedisCache(
            redis_url.strip(),
            prefix=prefix,
            ttl_s=ttl_s,
            timeout_s=redis_timeout_s,
            retry_after_s=retry_after_s,
        )
    elif memory_entries > 0:
        cache = MemoryCache(memory_entries, ttl_s)
    else:
        cache = NullCache()
    log.info("embedding cache backend: %s", cache.backend)
    return cache
