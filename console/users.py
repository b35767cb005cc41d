"""Who may use the console, and as what: a file of JSON lines mapping a gateway API key's hash to a person's
display name and a role::

    {"name": "alice", "role": "reviewer", "key_hash": "sha256:<64 hex>"}

Roles, each including the one before: ``viewer`` (browse results, CSV/JSON export), ``reviewer`` (analyse
images, confirm or correct results, the retraining export), ``admin`` (delete results, run jobs). The key
itself is never stored; a presented key is hashed and compared with every record in constant time per
record.
The file is re-read when it changes, so people can be added or removed without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from hemascope.errors import ConfigurationError

ROLES = ("viewer", "reviewer", "admin")
HASH_PREFIX = "sha256:"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>`` (the gateway's own scheme)."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` includes ``needed``."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    name: str
    role: str


@dataclass(frozen=True)
class _Record:
    user: User
    digest: bytes


def parse_users(path: Path, text: str) -> list[_Record]:
    records: list[_Record] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            raw = json.loads(stripped)
            name, role, key_hash = str(raw["name"]), str(raw["role"]), str(raw["key_hash"])
            if not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"name {name!r} must be 1-64 letters, digits, spaces or '._@-'")
            if role not in ROLES:
                raise ValueError(f"role {role!r} must be one of {', '.join(ROLES)}")
            if not key_hash.startswith(HASH_PREFIX):
                raise ValueError(f"key_hash must start with {HASH_PREFIX!r}")
            digest = bytes.fromhex(key_hash.removeprefix(HASH_PREFIX))
            if len(digest) != 32:
                raise ValueError("key_hash must hold 64 hex digits")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"console users file {path}, line {number}: {exc}") from None
        records.append(_Record(User(name, role), digest))
    return records


class UserDirectory:
    """The users file, re-read when its modification time or size changes; a file that becomes unreadable
    or malformed lets nobody in (fails closed) until it is fixed."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._records: list[_Record] = []
        if path.exists():  # a missing file lets nobody in until it is made (`hemascope console add-user`)
            self._load()

    def _load(self) -> None:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp == self._stamp:
                return
            self._records = parse_users(self._path, self._path.read_text(encoding="utf-8"))
            self._stamp = stamp
        except (OSError, UnicodeDecodeError, ConfigurationError):
            self._records, self._stamp = [], None
            raise

    def lookup(self, key: str) -> User | None:
        """The user whose key this is, or None."""
        with self._lock:
            try:
                self._load()
            except (OSError, UnicodeDecodeError, ConfigurationError):
                return None
            records = list(self._records)
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: User | None = None
        for record in records:
            if hmac.compare_digest(record.digest, digest) and found is None:
                found = record.user
        return found


def add_user(path: Path, name: str, role: str, key: str) -> None:
    """Appends a user to the users file (made with mode 0600 when missing); ConfigurationError when the
    record would be invalid."""
    line = json.dumps({"name": name, "role": role, "key_hash": hash_key(key)})
    parse_users(path, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
