"""The audit trail: one JSON line per request, append-only and hash-chained.

Each line is a canonical JSON object (sorted keys, no spaces, ASCII) with the record's fields plus ``v``
(format version), ``seq`` (1, 2, 3 ...), ``time`` (UTC, ISO 8601), ``alg``, ``prev_hash`` (the previous
line's ``hash``; 64 zeros for the first line) and ``hash``: SHA-256, or HMAC-SHA-256 when the log has a key,
over the canonical JSON of every other field. Editing, deleting, reordering or inserting a line breaks the
chain at that line, which :func:`verify` (and ``hemascope audit verify``) reports.

What a plain hash chain cannot show: a writer who can edit the file can recompute every hash after an edit,
and cutting lines off the end leaves a valid shorter chain. Two defences, both optional: a secret key (HMAC;
the verifier needs it, the attacker does not have it), and anchors: record the ``hash`` printed by
``verify`` somewhere else from time to time; :func:`verify` with ``anchors`` fails when one of them is no
longer in the chain.

What a record holds: caller id, the caller's network peer (format 2), content hash of the decoded pixels,
the request's option fields, model versions, outcome and per-part status codes, latency and the RPC name.
Never image bytes, never the caller's image id (which may be a patient identifier): :class:`AuditRecord`
has no field for them, options go through :func:`sanitize_options`, and ``content_hash`` must be a hex
SHA-256.

Formats: version 2 lines add ``peer`` (the caller's address, e.g. ``ipv4:10.0.0.7:51234``); version 3 lines
add ``trace_id`` (the call's OpenTelemetry trace id, 32 hex digits, or empty when tracing is off: see
:mod:`hemascope.tracing`). Version 1 and 2 lines still verify, and a log may hold every version.

A failed write (disk full, I/O error) refuses that request (Unavailable) and cuts the file back to its last
complete line, so the chain stays intact; the next append tries again (see :class:`gateway.audit_trail.
AuditTrail` for failing closed and recovering).

Restart: :class:`AuditLog` resumes the chain from the file's last line. It refuses to start (a
:class:`~hemascope.errors.ConfigurationError`) when that line is incomplete or does not verify: appending
after a damaged tail would hide the damage. The operator runs ``hemascope audit verify``, keeps the file as
evidence and starts a new one. One process writes a file at a time (an exclusive ``flock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from hemascope.errors import ConfigurationError, InvalidArgument, Unavailable

FORMAT_VERSION = 3
_V1, _V2 = 1, 2
GENESIS_HASH = "0" * 64
ALG_SHA256 = "sha256"
ALG_HMAC = "hmac-sha256"
MAX_OPTION_STRING = 128
MAX_OPTION_ITEMS = 32
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OPTION_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_V1_FIELDS = frozenset(
    {"v", "seq", "time", "alg", "prev_hash", "hash", "caller_id", "content_hash", "options"}
    | {"model_versions", "outcome", "parts", "latency_ms", "rpc"}
)
_ENTRY_FIELDS = {
    _V1: _V1_FIELDS,
    _V2: _V1_FIELDS | {"peer"},
    FORMAT_VERSION: _V1_FIELDS | {"peer", "trace_id"},
}
_TRACE_ID = re.compile(r"^([0-9a-f]{32})?$")
MAX_PEER_CHARS = 128


@dataclass
class AuditRecord:
    """What is audited about one request (the log adds time, sequence and hashes)."""

    caller_id: str
    content_hash: str
    """Hex SHA-256 of the decoded pixels; empty when the image could not be decoded."""
    options: dict[str, Any]
    model_versions: dict[str, str]
    outcome: str
    """The call's status code name, e.g. ``"OK"``, ``"INVALID_ARGUMENT"``, ``"UNAUTHENTICATED"``."""
    parts: dict[str, str]
    """Status code name per part, e.g. ``{"classification": "OK", "detection": "DEADLINE_EXCEEDED"}``."""
    latency_ms: float
    rpc: str
    peer: str = ""
    """The caller's network address as gRPC gives it (``ipv4:host:port``); empty when unknown."""
    trace_id: str = ""
    """The call's trace id (32 hex digits, :func:`hemascope.tracing.current_trace_id`); empty untraced."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    """Records that verified (all of them when ``ok``)."""
    first_bad_line: int | None
    """1-based line number of the first line that breaks the chain; None when ``ok``."""
    message: str
    head_hash: str = ""
    """``hash`` of the last good record (an anchor to keep elsewhere); empty for an empty log."""


# ----------------------------------------------------------------------
# Sanitising options
# ----------------------------------------------------------------------


def _scalar(value: Any) -> bool | int | float | str | None:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[:MAX_OPTION_STRING]
    raise TypeError  # bytes, messages, mappings: never audited


def sanitize_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Option fields fit for the audit trail: scalars and short lists of scalars under snake_case keys.

    Bytes (an image), nested mappings and anything else are dropped; strings are cut to 128 characters.
    """
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not _OPTION_KEY.fullmatch(key):
            continue
        try:
            if isinstance(value, list | tuple):
                clean[key] = [_scalar(item) for item in value[:MAX_OPTION_ITEMS]]
            else:
                clean[key] = _scalar(value)
        except TypeError:
            continue
    return clean


def options_from_message(message: Message) -> dict[str, Any]:
    """The set scalar fields of an options message (e.g. ``AnalyzeOptions``); bytes and message fields are
    left out."""
    options: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.type in (
            FieldDescriptor.TYPE_BYTES,
            FieldDescriptor.TYPE_MESSAGE,
            FieldDescriptor.TYPE_GROUP,
        ):
            continue
        options[field.name] = list(value) if field.is_repeated else value
    return sanitize_options(options)


# ----------------------------------------------------------------------
# Hashing
# ----------------------------------------------------------------------


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(
        entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def entry_hash(entry: Mapping[str, Any], key: bytes | None = None) -> str:
    """The hash of a line: over every field except ``hash`` itself (``prev_hash`` included)."""
    body = _canonical({name: value for name, value in entry.items() if name != "hash"})
    if key is not None:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


def read_key_file(path: Path) -> bytes:
    """An HMAC key from a file (surrounding whitespace ignored); at least 32 bytes."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read audit key file {path}: {exc.strerror or exc}") from None
    if len(key) < 32:
        raise ConfigurationError(f"audit key file {path} holds {len(key)} bytes; use at least 32")
    return key


def _entry(record: AuditRecord, seq: int, prev_hash: str, key: bytes | None) -> dict[str, Any]:
    if not (record.content_hash == "" or _HEX64.fullmatch(record.content_hash)):
        raise InvalidArgument("audit content_hash must be a hex SHA-256 (or empty)", field="content_hash")
    if not _TRACE_ID.fullmatch(record.trace_id):
        raise InvalidArgument("audit trace_id must be 32 hex digits (or empty)", field="trace_id")
    if not math.isfinite(record.latency_ms):
        raise InvalidArgument("audit latency_ms must be finite", field="latency_ms")
    entry: dict[str, Any] = asdict(record)
    entry["options"] = sanitize_options(record.options)
    entry["model_versions"] = {str(k): str(v) for k, v in record.model_versions.items()}
    entry["parts"] = {str(k): str(v) for k, v in record.parts.items()}
    entry["latency_ms"] = round(float(record.latency_ms), 3)
    entry["peer"] = str(record.peer)[:MAX_PEER_CHARS]
    entry |= {
        "v": FORMAT_VERSION,
        "seq": seq,
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),
        "alg": ALG_HMAC if key is not None else ALG_SHA256,
        "prev_hash": prev_hash,
    }
    entry["hash"] = entry_hash(entry, key)
    return entry


# ----------------------------------------------------------------------
# Checking lines (shared by AuditLog's resume and verify)
# ----------------------------------------------------------------------


class _BadLine(Exception):
    pass


def _check_line(raw: bytes, key: bytes | None) -> dict[str, Any]:
    """Parses one line and checks its own hash; _BadLine says what is wrong."""
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadLine("is not valid JSON") from None
    if not isinstance(entry, dict) or "v" not in entry:
        raise _BadLine("is not an audit record (fields missing or added)")
    fields = _ENTRY_FIELDS.get(entry["v"]) if isinstance(entry["v"], int) else None
    if fields is not None and set(entry) != fields:
        raise _BadLine("is not an audit record (fields missing or added)")
    if fields is None or not isinstance(entry["seq"], int):
        raise _BadLine(f"has an unknown format version {entry['v']!r} or a bad sequence number")
    expected_alg = ALG_HMAC if key is not None else ALG_SHA256
    if entry["alg"] != expected_alg:
        hint = "pass the log's key" if entry["alg"] == ALG_HMAC else "it was written without a key"
        raise _BadLine(f"is hashed with {entry['alg']!r}, expected {expected_alg!r} ({hint})")
    if not isinstance(entry["hash"], str) or not hmac.compare_digest(entry["hash"], entry_hash(entry, key)):
        raise _BadLine("does not match its hash: it was edited")
    return entry


def verify(path: Path, key: bytes | None = None, anchors: Sequence[str] = ()) -> VerifyResult:
    """Checks every line of the log at ``path``: its own hash, its link to the line before, its sequence
    number, and (optionally) that each hash in ``anchors`` is still in the chain."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return VerifyResult(False, 0, None, f"cannot read {path}: {exc.strerror or exc}")
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    prev_hash, count = GENESIS_HASH, 0
    wanted = set(anchors)
    for number, raw in enumerate(complete, start=1):
        try:
            entry = _check_line(raw, key)
        except _BadLine as exc:
            return VerifyResult(False, count, number, f"line {number} {exc}", _head(count, prev_hash))
        if entry["prev_hash"] != prev_hash:
            message = (
                f"line {number} does not follow line {number - 1}: a line was deleted, inserted or moved"
            )
            if number == 1:
                message = "line 1 is not the start of a chain: lines before it were deleted"
            return VerifyResult(False, count, number, message, _head(count, prev_hash))
        if entry["seq"] != number:
            message = f"line {number} has sequence number {entry['seq']}, expected {number}"
            return VerifyResult(False, count, number, message, _head(count, prev_hash))
        prev_hash, count = entry["hash"], count + 1
        wanted.discard(prev_hash)
    if tail:
        number = len(complete) + 1
        message = f"line {number} is incomplete (no newline): a write was cut short or the file was edited"
        return VerifyResult(False, count, number, message, _head(count, prev_hash))
    if wanted:
        missing = ", ".join(sorted(wanted))
        return VerifyResult(
            False,
            count,
            None,
            f"anchor(s) not in the chain (lines cut off or rewritten): {missing}",
            prev_hash,
        )
    return VerifyResult(True, count, None, f"{count} records, chain intact", _head(count, prev_hash))


def _head(count: int, prev_hash: str) -> str:
    return prev_hash if count else ""


REASON = "AUDIT_UNAVAILABLE"


def _open(path: Path) -> int:
    """Opens (creating it, mode 0600) the log for appending; ConfigurationError naming the path and the
    setting when that is impossible."""
    fix = "choose a writable file with --audit-log (HEMASCOPE_GATEWAY_AUDIT_LOG)"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot open the audit log {path}: {exc.strerror or exc}; {fix}", field="audit_log"
        ) from None


def _last_line(fd: int) -> tuple[bytes, bool]:
    """The last line of a non-empty file (without its newline) and whether the file ends with a newline."""
    chunk, end = 4096, os.fstat(fd).st_size
    buffer = b""
    while end > 0:
        start = max(0, end - chunk)
        buffer = os.pread(fd, end - start, start) + buffer
        end = start
        if buffer.count(b"\n") >= 2 or (buffer.count(b"\n") == 1 and not buffer.endswith(b"\n")):
            break
    complete = buffer.endswith(b"\n")
    body = buffer[:-1] if complete else buffer
    return body.rsplit(b"\n", 1)[-1], complete


Writer = Callable[[int, bytes], int]


class AuditLog:
    """Appends hash-chained records to ``path``; thread-safe; each write is fsync'd.

    ``write`` is the system call that writes a line (``os.write``; tests inject failures through it).
    """

    def __init__(
        self, path: Path, key: bytes | None = None, fsync: bool = True, write: Writer = os.write
    ) -> None:
        self.path = Path(path)
        self._key = key
        self._fsync = fsync
        self._write = write
        self._lock = threading.Lock()
        self._fd: int | None = _open(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._close_fd()
            raise ConfigurationError(f"audit log {self.path} is already open in another writer") from None
        try:
            self._seq, self._head = self._resume()
        except ConfigurationError:
            self._close_fd()
            raise

    def _resume(self) -> tuple[int, str]:
        assert self._fd is not None
        if os.fstat(self._fd).st_size == 0:
            return 0, GENESIS_HASH
        line, complete = _last_line(self._fd)
        fix = f"run `hemascope audit verify {self.path}`, keep the file as evidence and start a new log"
        if not complete:
            raise ConfigurationError(f"audit log {self.path}: the last line is incomplete; {fix}")
        try:
            entry = _check_line(line, self._key)
        except _BadLine as exc:
            raise ConfigurationError(f"audit log {self.path}: the last line {exc}; {fix}") from None
        return int(entry["seq"]), str(entry["hash"])

    @property
    def head(self) -> tuple[int, str]:
        """(sequence, hash) of the last record written; (0, 64 zeros) for a new log."""
        with self._lock:
            return self._seq, self._head

    def append(self, record: AuditRecord) -> str:
        """Writes ``record`` as the next line; returns its hash. Unavailable once closed, or when this write
        fails (the request should then fail: nothing goes unaudited); the file is then cut back to its last
        complete line and the next append tries again."""
        with self._lock:
            if self._fd is None:
                raise Unavailable("the audit log is closed; requests cannot be audited", reason=REASON)
            entry = _entry(record, self._seq + 1, self._head, self._key)
            line = _canonical(entry) + b"\n"
            size = os.fstat(self._fd).st_size
            try:
                written = self._write(self._fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                self._cut_back(size)
                raise Unavailable(f"the audit log cannot be written: {exc}", reason=REASON) from None
            self._seq, self._head = entry["seq"], entry["hash"]
            return self._head

    def _cut_back(self, size: int) -> None:
        """Removes what a failed write left after the last complete line (best effort: a device such as
        /dev/full cannot be truncated, and nothing was written to it)."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size > size:
                os.ftruncate(self._fd, size)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the flock

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
