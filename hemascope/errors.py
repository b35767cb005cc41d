"""Domain errors. Each carries the gRPC status code it maps to and a machine-readable reason.

Core code raises these; the server's error interceptor turns them into a status code, the message and an
``ErrorDetail`` (see ``protos/hemascope/v1/common.proto``). Messages are written for the caller: they say
what was wrong and what to do, and never contain image bytes or caller-supplied identifiers.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

#: Longest caller-supplied value quoted in an error message (see :func:`echo`).
MAX_ECHO_CHARS = 64


class HemascopeError(Exception):
    """Root of every error the services raise on purpose."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field


def echo(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A caller-supplied value quoted for an error message: ``repr`` of at most ``limit`` characters of it,
    with the full length named when it was cut (so a megabyte of input never comes back in an error)."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class InvalidArgument(HemascopeError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class InvalidImage(InvalidArgument):
    """The bytes are not an image we can read, or break a size limit."""

    default_reason = "INVALID_IMAGE"


class Unauthenticated(HemascopeError):
    """No valid credentials (e.g. a missing or wrong API key); never says whether a caller exists."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(HemascopeError):
    """The caller is known but may not call this (e.g. an administrative RPC without the admin identity)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(HemascopeError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class FailedPrecondition(HemascopeError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(HemascopeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(HemascopeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unavailable(HemascopeError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class ConfigurationError(HemascopeError):
    """A setting or model file is wrong; raised at start-up, stops the service with a clear message."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "CONFIGURATION"


_BY_CODE: dict[grpc.StatusCode, type[HemascopeError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
    )
}


def error_class(code: grpc.StatusCode) -> type[HemascopeError]:
    """The domain error class of a status code (the one map from codes to errors); HemascopeError, which
    maps to INTERNAL, for codes without their own class."""
    return _BY_CODE.get(code, HemascopeError)
