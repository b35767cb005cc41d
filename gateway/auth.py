"""API keys: a store of hashed keys, and the server interceptor that checks the ``x-api-key`` metadata.

Key file format (JSON lines, one record per key; blank lines and lines starting with ``#`` are ignored)::

    {"caller_id": "lis-north", "key_hash": "sha256:<64 hex>", "created": "2025-01-01T00:00:00+00:00"}

Hashing: a key is ``hsk_`` + 256 random bits (``secrets.token_urlsafe(32)``) and is stored as its plain
SHA-256. A slow, salted hash (scrypt, PBKDF2) exists to make guessing *low-entropy* secrets such as passwords
expensive; a 256-bit random key cannot be guessed whatever the hash costs, so SHA-256 gives the same safety
while checking a key costs microseconds instead of tens of milliseconds on every RPC. Keys generated
elsewhere with less entropy must not be put in the file (``add_key`` is the way to make keys). The
plaintext key is shown once, when it is made, and never written anywhere.

A presented key is hashed and compared with *every* stored hash with ``hmac.compare_digest`` (no early exit),
so the time taken does not depend on which record, if any, matches. Several keys may share a caller id
(rotation: add the new key, move the caller over, delete the old line). The file is re-read when it changes
(checked at most every ``reload_interval_s``), so keys can be added or revoked without a restart.

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
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from hemascope.errors import ConfigurationError, InvalidArgument, Unauthenticated
from hemascope.interceptors import error_detail
from hemascope.logs import get_logger
from hemascope.telemetry import RPC_REQUESTS

log = get_logger(__name__)

API_KEY_HEADER = "x-api-key"
ANONYMOUS = "anonymous"
KEY_PREFIX = "hsk_"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 256
CALLER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Kubernetes probes and tooling must work without a key.
EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
MISSING_MESSAGE = f"missing API key: send it in the '{API_KEY_HEADER}' metadata entry"
INVALID_MESSAGE = "invalid API key"


@dataclass(frozen=True)
class _KeyRecord:
    caller_id: str
    digest: bytes


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
        except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
            detail = exc.message if isinstance(exc, InvalidArgument) else str(exc)
            raise ConfigurationError(f"API key file {path}, line {number}: {detail}") from None
        records.append(_KeyRecord(caller_id, digest))
    return records


class ApiKeyStore:
    """Hashed API keys loaded from a key file; maps a presented key to its caller id."""

    def __init__(
        self, records: list[_KeyRecord], path: Path | None = None, reload_interval_s: float = 2.0
    ) -> None:
        self._records = tuple(records)
        self._path = path
        self._reload_interval_s = reload_interval_s
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, reload_interval_s: float = 2.0) -> ApiKeyStore:
        """Loads ``path``; ConfigurationError when it is missing or malformed."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read API key file {path}: {exc.strerror or exc}") from None
        return cls(_parse(Path(path), text), Path(path), reload_interval_s)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def callers(self) -> frozenset[str]:
        """Every caller id that has at least one key."""
        return frozenset(record.caller_id for record in self._records)

    def caller_for(self, key: str) -> str | None:
        """The caller id of ``key``, or None when it is not a valid key. Constant time in the match."""
        self._maybe_reload()
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: str | None = None
        for record in self._records:
            if hmac.compare_digest(digest, record.digest):
                found = record.caller_id
        return found

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _maybe_reload(self) -> None:
        if self._path is None or time.monotonic() - self._checked < self._reload_interval_s:
            return
        with self._lock:
            if time.monotonic() - self._checked < self._reload_interval_s:
                return
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            try:
                records = _parse(self._path, self._path.read_text(encoding="utf-8"))
            except (OSError, ConfigurationError) as exc:
                # Keep serving with the keys we have; the operator sees the error.
                log.error("api_keys_reload_failed", error=str(exc))
                return
            self._records = tuple(records)
            self._stamp = stamp
            log.info("api_keys_reloaded", keys=len(records))


def add_key(path: Path, caller_id: str) -> str:
    """Appends a new key for ``caller_id`` to ``path`` (created with mode 0600); returns the plaintext key.

    The plaintext is returned once and stored nowhere: only its hash goes into the file.
    """
    validate_caller_id(caller_id)
    key = generate_key()
    record = {
        "caller_id": caller_id,
        "key_hash": hash_key(key),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


# ----------------------------------------------------------------------
# Interceptor
# ----------------------------------------------------------------------

_callers: weakref.WeakKeyDictionary[grpc.ServicerContext, str] = weakref.WeakKeyDictionary()
_callers_lock = threading.Lock()


def caller_id(context: grpc.ServicerContext) -> str:
    """The authenticated caller of the RPC ``context`` belongs to; ``"anonymous"`` when auth is off."""
    with _callers_lock:
        return _callers.get(context, ANONYMOUS)


def _bind(context: grpc.ServicerContext, caller: str) -> None:
    with _callers_lock:
        _callers[context] = caller


def _abort(context: grpc.ServicerContext, error: Unauthenticated) -> None:
    detail = any_pb2.Any()
    detail.Pack(error_detail(error))
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    context.abort_with_status(cast(grpc.Status, rpc_status.to_status(status)))


_Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _rewrap(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[_Behavior, bool], _Behavior]
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behavior replaced by ``wrap(behavior, streams_responses)``, same kind."""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, False),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, False),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, True),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, True),
    )
    for behavior, factory, streaming in kinds:
        if behavior is not None:
            return factory(
                wrap(behavior, streaming),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the ``x-api-key`` metadata of every RPC except health and reflection.

    ``store=None`` with ``required=False``: authentication off, every caller is ``"anonymous"``. With a
    store and ``required=True``: a missing or wrong key is refused with UNAUTHENTICATED. With a store and
    ``required=False``: a missing key is let through as ``"anonymous"``, a wrong key is still refused.
    The refusal never says whether a key or caller exists.
    """

    def __init__(self, store: ApiKeyStore | None, required: bool) -> None:
        if store is None and required:
            raise ConfigurationError(
                "API keys are required but no key file is set: set HEMASCOPE_GATEWAY_API_KEYS_FILE "
                "(create keys with `hemascope gateway add-key`) or HEMASCOPE_GATEWAY_REQUIRE_API_KEY=false"
            )
        self._store = store
        self._required = required

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or self._store is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        key = _metadata_value(handler_call_details.invocation_metadata, API_KEY_HEADER)
        if key is None and not self._required:
            return handler
        caller = self._store.caller_for(key) if key is not None else None
        if caller is None:
            reason = "missing" if key is None else "invalid"
            log.warning("auth_rejected", method=method, reason=reason)
            error = Unauthenticated(MISSING_MESSAGE if key is None else INVALID_MESSAGE)
            return _rewrap(handler, _refuse(error, method))
        return _rewrap(handler, _as_caller(caller))


def _metadata_value(metadata: Any, name: str) -> str | None:
    for entry_key, value in metadata or ():
        if entry_key == name:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


def _refuse(error: Unauthenticated, method: str) -> Callable[[_Behavior, bool], _Behavior]:
    """Handlers that fail the call with ``error``; counted in the kernel's per-RPC counter (the kernel's
    interceptor, which counts the other calls, never sees a refused one)."""

    def wrap(_behavior: _Behavior, streaming: bool) -> _Behavior:
        def unary(_request: Any, context: grpc.ServicerContext) -> Any:
            RPC_REQUESTS.labels(method, error.code.name).inc()
            _abort(context, error)

        def stream(_request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            RPC_REQUESTS.labels(method, error.code.name).inc()
            _abort(context, error)
            yield from ()

        return stream if streaming else unary

    return wrap


def _as_caller(caller: str) -> Callable[[_Behavior, bool], _Behavior]:
    def wrap(behavior: _Behavior, streaming: bool) -> _Behavior:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            _bind(context, caller)
            return behavior(request, context)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            _bind(context, caller)
            yield from behavior(request, context)

        return stream if streaming else unary

    return wrap
