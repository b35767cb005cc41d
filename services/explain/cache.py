"""The explanation cache: low-resolution heat maps keyed by everything they depend on, and nothing else.

An explanation is a pure function of (decoded pixels, bundle, preprocessing, model, method, class), so the
key (:class:`ExplainKey`) holds exactly those: the pixels' content hash, the bundle version (which also
fixes the backbone weights: the service refuses weights whose hash differs from the bundle's), the
preprocessing version, the model, the method and the requested class. Never image bytes or caller ids.
The method is named with its revision (:meth:`services.explain.cam.CamExplainer.revision`): an engine
whose maps may differ from those cached by another (Ablation-CAM's ``pooled`` and ``library``) has its
own name, so a map cached by one is never served as the other's.

Only the small result is stored (a 7 x 7 map, the probabilities, the crop box: a few hundred bytes of
JSON); the overlay PNG is re-rendered from the caller's image, so a cache entry never holds pixels.

Backends: an in-process LRU (default), Redis (shared by replicas; failures and timeouts are misses, logged
once per outage, never errors), or none. A stored value that does not parse is a miss. Redis values are
sealed (:mod:`hemascope.cache.seal`: an HMAC over the value and its key), so one written by anyone without
the cache key is a miss, never an explanation.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import numpy as np
import redis
from numpy.typing import NDArray

from hemascope.cache.seal import Sealer
from hemascope.logs import get_logger
from services.explain.metrics import CACHE_LOOKUPS

log = get_logger(__name__)

#: Version of the key layout and value encoding; bump it to orphan every existing entry.
KEY_VERSION = "v1"
_REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ExplainKey:
    content_hash: str
    bundle_version: str
    preprocessing: str
    model: str
    method: str  # with its revision, e.g. "ablationcam.pooled-1"
    target_class: str  # "" = the predicted class

    def render(self, prefix: str) -> str:
        """``{prefix}cam:v1:{bundle}:{preprocessing}:{model}:{method}:{class}:{content_hash}``.

        Every field is percent-encoded (``:`` included), so different keys never render alike.
        """
        fields = (
            self.bundle_version,
            self.preprocessing,
            self.model,
            self.method,
            self.target_class,
            self.content_hash,
        )
        return f"{prefix}cam:{KEY_VERSION}:" + ":".join(quote(field, safe="") for field in fields)


@dataclass(frozen=True)
class CachedHeat:
    """What is cached for one explanation (the image's own probabilities, not an embedding's)."""

    heatmap: NDArray[np.float32]
    class_index: int
    predicted_index: int
    probabilities: NDArray[np.float64]
    method: str
    box: Box | None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "heatmap": self.heatmap.astype(np.float32).tolist(),
                "class_index": self.class_index,
                "predicted_index": self.predicted_index,
                "probabilities": self.probabilities.astype(np.float64).tolist(),
                "method": self.method,
                "box": list(self.box) if self.box is not None else None,
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def decode(data: bytes) -> CachedHeat | None:
        """The stored value, or None when it does not parse as one."""
        try:
            raw = json.loads(data)
            heatmap = np.asarray(raw["heatmap"], dtype=np.float32)
            probabilities = np.asarray(raw["probabilities"], dtype=np.float64)
            box = raw["box"]
            value = CachedHeat(
                heatmap=heatmap,
                class_index=int(raw["class_index"]),
                predicted_index=int(raw["predicted_index"]),
                probabilities=probabilities,
                method=str(raw["method"]),
                box=None if box is None else (int(box[0]), int(box[1]), int(box[2]), int(box[3])),
            )
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        sizes_ok = heatmap.ndim == 2 and heatmap.size > 0 and probabilities.ndim == 1
        indices_ok = (
            0 <= value.class_index < probabilities.size and 0 <= value.predicted_index < probabilities.size
        )
        return value if sizes_ok and indices_ok else None


class _Store(Protocol):
    backend: str

    def get(self, name: str) -> bytes | None: ...

    def put(self, name: str, data: bytes) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """Thread-safe in-process LRU of at most ``max_entries`` values, each living ``ttl_s`` seconds."""

    backend = "memory"

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, name: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            if time.monotonic() >= entry[0]:
                del self._entries[name]
                return None
            self._entries.move_to_end(name)
            return entry[1]

    def put(self, name: str, data: bytes) -> None:
        with self._lock:
            self._entries[name] = (time.monotonic() + self._ttl_s, data)
            self._entries.move_to_end(name)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()


class NullStore:
    backend = "none"

    def get(self, name: str) -> bytes | None:
        return None

    def put(self, name: str, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None


class RedisStore:
    """Redis with short socket timeouts; any failure is a miss or a dropped write (logged once per outage)."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        ttl_s: int,
        timeout_s: float,
        sealer: Sealer | None = None,
        password: str | None = None,
    ) -> None:
        self._ttl_s = ttl_s
        self._sealer = sealer or Sealer.random()
        extra = {"password": password} if password else {}
        self._client = redis.Redis.from_url(
            url, **extra, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._down = False
        self.errors = 0
        self.refused = 0
        """Values that did not open under their key (forged, moved or of another secret)."""

    def get(self, name: str) -> bytes | None:
        try:
            data = self._client.get(name)
        except _REDIS_ERRORS as exc:
            self._failed("get", exc)
            raise CacheUnavailable from exc
        self._recovered()
        if not isinstance(data, bytes):
            return None
        payload = self._sealer.open(name, data)
        if payload is None:
            self.refused += 1
            log.warning("explain_cache_entry_refused", detail="fails its check: forged, moved or old")
        return payload

    def put(self, name: str, data: bytes) -> None:
        try:
            self._client.set(name, self._sealer.seal(name, data), ex=self._ttl_s)
        except _REDIS_ERRORS as exc:
            self._failed("put", exc)
            return
        self._recovered()

    def close(self) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            self._client.close()

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if not self._down:
            self._down = True
            log.warning("explain_cache_unavailable", op=op, error=type(exc).__name__)

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.info("explain_cache_available")


class CacheUnavailable(Exception):
    """The store could not be asked (counted as an error outcome, served as a miss)."""


class ExplainCache:
    """Typed get/put of :class:`CachedHeat` values over one store."""

    def __init__(self, store: _Store, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix

    @property
    def backend(self) -> str:
        return self.store.backend

    def get(self, key: ExplainKey) -> CachedHeat | None:
        try:
            data = self.store.get(key.render(self.prefix))
        except CacheUnavailable:
            CACHE_LOOKUPS.labels(self.backend, "error").inc()
            return None
        value = CachedHeat.decode(data) if data is not None else None
        CACHE_LOOKUPS.labels(self.backend, "miss" if value is None else "hit").inc()
        return value

    def put(self, key: ExplainKey, value: CachedHeat) -> None:
        self.store.put(key.render(self.prefix), value.encode())

    def close(self) -> None:
        self.store.close()


def build_explain_cache(
    redis_url: str | None,
    *,
    prefix: str,
    ttl_s: int,
    memory_entries: int,
    redis_timeout_s: float,
    sealer: Sealer | None = None,
    redis_password: str | None = None,
) -> ExplainCache:
    """Redis when a URL is set, else an in-process LRU, else (``memory_entries`` 0) no cache."""
    store: _Store
    if redis_url and redis_url.strip():
        store = RedisStore(redis_url.strip(), ttl_s, redis_timeout_s, sealer, redis_password)
    elif memory_entries > 0:
        store = MemoryStore(memory_entries, ttl_s)
    else:
        store = NullStore()
    return ExplainCache(store, prefix if store.backend == "redis" else "")
