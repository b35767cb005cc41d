"""What every backend shares: the :class:`EmbeddingCache` protocol, the Prometheus counters and the
per-object ``stats()`` bookkeeping."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt
from prometheus_client import Counter

from hemascope.cache.keys import CacheKey, Vector

__all__ = ["CACHE_REQUESTS", "CACHE_WRITES", "Clock", "EmbeddingCache"]

#: ``time.monotonic``-like clock, injectable for tests.
Clock = Callable[[], float]

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
