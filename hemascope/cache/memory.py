"""In-process backends: :class:`MemoryCache` (thread-safe LRU with an optional TTL) and
:class:`NullCache` (caching switched off)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy.typing as npt

from hemascope.cache.base import Clock, _Instrumented
from hemascope.cache.keys import CacheKey, Vector, decode_vector, encode_vector

__all__ = ["MemoryCache", "NullCache"]


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
