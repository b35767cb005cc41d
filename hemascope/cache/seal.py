"""Authenticated cache values: an HMAC-SHA-256 over each stored value *and* the key it is stored under.

A shared cache (Redis) is writable by anything that can reach it. Without a check, whoever can write to it
decides what the service returns: a basophil's embedding stored under a myeloblast image's key makes the
next analysis of that image say basophil, with ``cache_hit`` true. So every value is sealed::

    b"hs1" + HMAC-SHA-256(secret, b"hs1" + key + b"\\0" + payload) + payload

The key holds the value's provenance (backbone, weights hash, preprocessing version, content hash of the
pixels), so a value sealed for one image, backbone or preprocessing does not open under another key. A
value that does not open (a forged, moved, truncated or old-format one) is a miss, counted and deleted.

The secret comes from a file (``cache_key_file``, at least 32 bytes; every replica sharing the cache needs
the same one). Without one each process makes a random secret: the cache then still cannot be poisoned,
but only this process can read what it wrote (a restart starts cold).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from hemascope.errors import ConfigurationError

TAG = b"hs1"
MAC_BYTES = 32
MIN_SECRET_BYTES = 32


class Sealer:
    """Seals and opens cache values with one secret."""

    def __init__(self, secret: bytes, *, ephemeral: bool = False) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"a cache key must hold at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.ephemeral = ephemeral
        """True for a random per-process secret (no cache_key_file)."""

    @classmethod
    def random(cls) -> Sealer:
        return cls(secrets.token_bytes(MIN_SECRET_BYTES), ephemeral=True)

    @classmethod
    def from_file(cls, path: Path, setting: str = "cache_key_file") -> Sealer:
        """The secret in ``path`` (surrounding whitespace ignored); ConfigurationError naming ``setting``."""
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ConfigurationError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"{setting}: {path} holds {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                "(e.g. `openssl rand -hex 32 > cache.key`)"
            )
        return cls(secret)

    @classmethod
    def for_settings(cls, path: Path | None) -> Sealer:
        return cls.from_file(path) if path is not None else cls.random()

    def _mac(self, name: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, TAG + name.encode() + b"\0" + payload, hashlib.sha256).digest()

    def seal(self, name: str, payload: bytes) -> bytes:
        """``payload`` as stored under ``name``."""
        return TAG + self._mac(name, payload) + payload

    def open(self, name: str, data: bytes) -> bytes | None:
        """The payload of a value stored under ``name``, or None when it was not sealed for that name with
        this secret."""
        head = len(TAG) + MAC_BYTES
        if len(data) < head or not data.startswith(TAG):
            return None
        mac, payload = data[len(TAG) : head], data[head:]
        return payload if hmac.compare_digest(mac, self._mac(name, payload)) else None
