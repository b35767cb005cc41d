"""Domain errors. Each carries the gRPC status code it maps to and a machine-readable reason.

Core code raises these; the server's error interceptor turns them into a status code, the message and an
``ErrorDetail`` (see ``protos/hemascope/v1/common.proto``). Messages are written for the caller: they say
what was wrong and what to do, and never contain image bytes or caller-supplied identifiers.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class HemascopeError(Exception):
    """Root of every error the services raise on purpose."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field


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
