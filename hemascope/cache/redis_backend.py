"""The shared Redis backend, :class:`RedisCache`, and the retry-after gate that keeps a dead Redis cheap."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy.typing as npt
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hemascope.cache.base import Clock, _Instrumented
from hemascope.cache.keys import CacheKey, Vector, decode_vector, encode_vector
from hemascope.cache.seal import Sealer

__all__ = ["RedisCache"]

# The package's logger, as before the split into modules, so log configuration and filters keep working.
log = logging.getLogger("hemascope.cache")

#: Exceptions that mean "Redis did not do it"; they never escape ``RedisCache.get``/``put``.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


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
    Values are sealed (:mod:`hemascope.cache.seal`) with ``sealer`` (a random per-process secret when
    None): one that does not open under its key (forged, moved from another key, another secret) counts as
    corrupt and is a miss, so whoever can write to Redis cannot choose what the service returns.
    ``password`` authenticates to Redis (it may also be in the URL). Thread-safe: redis-py's client and
    connection pool are, and the local state is lock-guarded.
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
        sealer: Sealer | None = None,
        password: str | None = None,
    ) -> None:
        if ttl_s is not None and ttl_s < 0:
            raise ValueError("ttl_s must be >= 0 (0 or None: no expiry)")
        if timeout_s <= 0 or retry_after_s < 0:
            raise ValueError("timeout_s must be positive and retry_after_s non-negative")
        super().__init__()
        self._prefix = prefix
        self._ttl_s = int(ttl_s) if ttl_s else None
        self._dim = dim
        self._sealer = sealer or Sealer.random()
        self._gate = _RetryGate(retry_after_s, clock)
        self._response_errors_reported: set[str] = set()
        extra: dict[str, Any] = {"password": password} if password else {}
        self._client = redis.Redis.from_url(
            url,
            **extra,
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
        payload = self._sealer.open(name, data) if isinstance(data, bytes) else None
        vector = decode_vector(payload, self._dim) if payload is not None else None
        if vector is None:
            self._discard_corrupt(name, data)
            self._miss()
            return None
        return self._hit(vector)

    def put(self, key: CacheKey, vector: npt.NDArray[Any]) -> None:
        """Store a copy of ``vector`` with the TTL; a failure or the retry-after window drops the write."""
        name = key.render(self._prefix)
        data = self._sealer.seal(name, encode_vector(vector))
        if not self._gate.allow():
            self._count("skipped")
            self._record_put("skipped")
            return
        try:
            self._client.set(name, data, ex=self._ttl_s)
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
        """Count a stored value that does not open under its key or has an impossible length, and delete it
        (best effort)."""
        self._count("corrupt")
        size = len(data) if isinstance(data, bytes | str) else -1
        log.warning(
            "discarding an embedding cache entry that fails its check (%d bytes): forged, moved, of "
            "another secret or corrupt",
            size,
        )
        try:
            self._client.delete(name)
        except _REDIS_ERRORS as exc:
            log.debug("deleting a corrupt embedding cache entry failed: %s", type(exc).__name__)
