"""Backend selection from configuration: :func:`build_cache`."""

from __future__ import annotations

import logging

from hemascope.cache.base import EmbeddingCache
from hemascope.cache.memory import MemoryCache, NullCache
from hemascope.cache.redis_backend import RedisCache
from hemascope.cache.seal import Sealer

__all__ = ["build_cache"]

# The package's logger, as before the split into modules, so log configuration and filters keep working.
log = logging.getLogger("hemascope.cache")


def build_cache(
    redis_url: str | None,
    *,
    prefix: str = "hemascope:",
    ttl_s: int = 7 * 24 * 3600,
    memory_entries: int = 10000,
    redis_timeout_s: float = 0.05,
    retry_after_s: float = 1.0,
    sealer: Sealer | None = None,
    redis_password: str | None = None,
) -> EmbeddingCache:
    """Pick the backend: Redis if ``redis_url`` is set, else an in-memory LRU, else (``memory_entries`` <= 0)
    no cache. Nothing connects here, so a Redis that is down at start-up does not stop the service.

    Redis values are sealed with ``sealer`` (:mod:`hemascope.cache.seal`); without one a random
    per-process secret is used and a warning says the cache cannot be shared."""
    if redis_url and redis_url.strip():
        if sealer is None or sealer.ephemeral:
            log.warning(
                "embedding cache: no cache key file; values are sealed with a random key of this process "
                "(not shared with other replicas, cold after a restart)"
            )
        cache: EmbeddingCache = RedisCache(
            redis_url.strip(),
            prefix=prefix,
            ttl_s=ttl_s,
            timeout_s=redis_timeout_s,
            retry_after_s=retry_after_s,
            sealer=sealer,
            password=redis_password,
        )
    elif memory_entries > 0:
        cache = MemoryCache(memory_entries, ttl_s)
    else:
        cache = NullCache()
    log.info("embedding cache backend: %s", cache.backend)
    return cache
