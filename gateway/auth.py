"""API keys: a store of hashed keys (the ``x-api-key`` metadata is checked by :mod:`gateway.identity`).

Key file format (JSON lines, one record per key; blank lines and lines starting with ``#`` are ignored)::

    {"caller_id": "lis-north", "key_hash": "sha256:<64 hex>", "created": "2025-01-01T00:00:00+00:00"}
    {"caller_id": "model-ops", "key_hash": "sha256:<64 hex>", "created": "...", "role": "admin"}

``role`` is optional: ``"caller"`` (the default) may analyse images; ``"admin"`` may also call the gateway's
administrative RPCs (``GatewayAdminService``, e.g. ``PromoteBundle``). Any other value makes the file
malformed (so a typo never grants or silently drops a role). ``hemascope gateway add-key --role admin``
writes an admin key. Give the admin role to as few keys as possible: an admin key changes what the
classifier serves to every caller.

Hashing: a key is ``hsk_`` + 256 random bits (``secrets.token_urlsafe(32)``) and is stored as its plain
SHA-256. A slow, salted hash (scrypt, PBKDF2) exists to make guessing *low-entropy* secrets such as passwords
expensive; a 256-bit random key cannot be guessed whatever the hash costs, so SHA-256 gives the same safety
while checking a key costs microseconds instead of tens of milliseconds on every RPC. Keys generated
elsewhere with less entropy must not be put in the file (``add_key`` is the way to make keys). The
plaintext key is shown once, when it is made, and never written anywhere.

A presented key is hashed and compared with *every* stored hash with ``hmac.compare_digest`` (no early exit),
so the time taken does not depend on which record, if any, matches. Several keys may share a caller id
(rotation: add the new key, move the caller over, delete the old line). The file is re-read when it changes
(checked at most every ``reload_interval_s``), so keys can be added or revoked without a restart. Reloading
fails closed: a key file that disappears, cannot be read or is malformed revokes *every* key (each call is
UNAUTHENTICATED, logged at ERROR) until a valid file is back; it never keeps the old keys.

Caller ids name calling *systems* (``lis-north``, ``pathology-lab``); they appear in logs and the audit
trail, so they are restricted to ``[A-Za-z0-9._-]`` and must never be a person's or patient's name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hemascope.errors import ConfigurationError, InvalidArgument
from hemascope.logs import get_logger

log = get_logger(__name__)

API_KEY_HEADER = "x-api-key"
ANONYMOUS = "anonymous"
KEY_PREFIX = "hsk_"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 256
CALLER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


CALLER_ROLE = "caller"
ADMIN_ROLE = "admin"
ROLES = (CALLER_ROLE, ADMIN_ROLE)


@dataclass(frozen=True)
class _KeyRecord:
    caller_id: str
    digest: bytes
    role: str = CALLER_ROLE


@dataclass(frozen=True)
class KeyHolder:
    """Who a valid key belongs to: its caller id and role."""

    caller_id: str
    role: str = CALLER_ROLE

    @property
    def admin(self) -> bool:
        return self.role == ADMIN_ROLE


def generate_key() -> str:
    """A new API key: ``hsk_`` + 256 random bits, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The at-rest form of ``key``: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def validate_caller_id(caller_id: str) -> str:
    """Returns ``caller_id`` when it is a valid id; InvalidArgument otherwise."""
    if not CALLER_ID_PATTERN.fullmatch(caller_id) or caller_id == ANONYMOUS:
        raise InvalidArgument(
            f"caller id must be 1-64 characters of letters, digits, '.', '_' or '-', start with a letter or "
            f"digit, and not be '{ANONYMOUS}'; got {caller_id!r}",
            field="caller_id",
        )
    return caller_id


def validate_role(role: str) -> str:
    """Returns ``role`` when it is a known role; InvalidArgument otherwise."""
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}; got {role!r}", field="role")
    return role


def _parse(path: Path, text: str) -> list[_KeyRecord]:
    records: list[_KeyRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            raw = json.loads(stripped)
            caller_id = validate_caller_id(str(raw["caller_id"]))
            key_hash = str(raw["key_hash"])
            if not key_hash.startswith(HASH_PREFIX):
                raise ValueError(f"key_hash must start with {HASH_PREFIX!r}")
            digest = bytes.fromhex(key_hash.removeprefix(HASH_PREFIX))
            if len(digest) != 32:
                raise ValueError("key_hash must hold 64 hex digits")
            role = raw.get("role", CALLER_ROLE)
            if not isinstance(role, str):
                raise ValueError(f"role must be a string, one of {', '.join(ROLES)}")
            validate_role(role)
        except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
            detail = exc.message if isinstance(exc, InvalidArgument) else str(exc)
            raise ConfigurationError(f"API key file {path}, line {number}: {detail}") from None
        records.append(_KeyRecord(caller_id, digest, role))
    return records


class ApiKeyStore:
    """Hashed API keys loaded from a key file; maps a presented key to its caller id and role."""

    def __init__(
        self,
        records: list[_KeyRecord],
        path: Path | None = None,
        reload_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = tuple(records)
        self._path = path
        self._reload_interval_s = reload_interval_s
        self._clock = clock
        self._stamp = self._file_stamp()
        self._checked = clock()
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls, path: Path, reload_interval_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> ApiKeyStore:
        """Loads ``path``; ConfigurationError when it is missing or malformed."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(f"cannot read API key file {path}: {detail}") from None
        return cls(_parse(Path(path), text), Path(path), reload_interval_s, clock)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def callers(self) -> frozenset[str]:
        """Every caller id that has at least one key."""
        return frozenset(record.caller_id for record in self._records)

    def caller_for(self, key: str) -> str | None:
        """The caller id of ``key``, or None when it is not a valid key. Constant time in the match."""
        holder = self.holder_for(key)
        return holder.caller_id if holder is not None else None

    def holder_for(self, key: str) -> KeyHolder | None:
        """The caller id and role of ``key``, or None when it is not a valid key. Constant time in the
        match."""
        self._maybe_reload()
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: _KeyRecord | None = None
        for record in self._records:
            if hmac.compare_digest(digest, record.digest):
                found = record
        return KeyHolder(found.caller_id, found.role) if found is not None else None

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked < self._reload_interval_s:
            return
        with self._lock:
            if self._clock() - self._checked < self._reload_interval_s:
                return
            self._checked = self._clock()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                if stamp is None:
                    raise ConfigurationError(f"API key file {self._path} is missing or unreadable")
                records = _parse(self._path, self._path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ConfigurationError) as exc:
                # Fail closed: a revocation must never be undone by a broken file.
                self._records = ()
                detail = exc.message if isinstance(exc, ConfigurationError) else str(exc)
                log.error(
                    "api_keys_reload_failed",
                    error=detail,
                    detail="every API key is refused until the key file is valid again",
                )
                return
            self._records = tuple(records)
            log.info("api_keys_reloaded", keys=len(records))


def add_key(path: Path, caller_id: str, role: str = CALLER_ROLE) -> str:
    """Appends a new key for ``caller_id`` with ``role`` to ``path`` (created with mode 0600); returns the
    plaintext key.

    The plaintext is returned once and stored nowhere: only its hash goes into the file. A caller key's
    record has no ``role`` field (the default); an admin key's has ``"role": "admin"``.
    """
    validate_caller_id(caller_id)
    validate_role(role)
    key = generate_key()
    record = {
        "caller_id": caller_id,
        "key_hash": hash_key(key),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if role != CALLER_ROLE:
        record["role"] = role
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
