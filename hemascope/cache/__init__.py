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

from hemascope.cache.base import CACHE_REQUESTS, CACHE_WRITES, EmbeddingCache
from hemascope.cache.base import Clock as Clock
from hemascope.cache.base import _Instrumented as _Instrumented
from hemascope.cache.factory import build_cache
from hemascope.cache.keys import KEY_VERSION as KEY_VERSION
from hemascope.cache.keys import CacheKey
from hemascope.cache.keys import Vector as Vector
from hemascope.cache.keys import decode_vector as decode_vector
from hemascope.cache.keys import encode_vector as encode_vector
from hemascope.cache.memory import MemoryCache, NullCache
from hemascope.cache.redis_backend import RedisCache
from hemascope.cache.redis_backend import _RetryGate as _RetryGate

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
