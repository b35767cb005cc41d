"""Exceptions of the Hemascope client: one class per kind of failure a caller handles differently.

Every failed call raises a :class:`HemascopeClientError` subclass chosen by its gRPC status code. When the
server attached an ``ErrorDetail`` (``google.rpc.Status`` details, as every Hemascope service does), its
reason, message and field are on the exception, e.g. ``InvalidImage(reason="TOO_MANY_PIXELS")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import grpc
from google.rpc import status_pb2

from hemascope.v1 import common_pb2

_DETAILS_KEY = "grpc-status-details-bin"


class HemascopeClientError(Exception):
    """A call to the gateway failed. ``code`` is the gRPC status; ``reason``, ``field`` and ``detail`` come
    from the server's ``ErrorDetail`` when it sent one."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    codes: ClassVar[tuple[grpc.StatusCode, ...]] = ()

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        field: str = "",
        detail: common_pb2.ErrorDetail | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        elif type(self).codes:
            self.code = type(self).codes[0]
        self.reason = reason or self.code.name
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code.name}: {self.message}{where}"


class InvalidArgument(HemascopeClientError):
    """The request was refused as it stands (bad options, empty request); do not retry it unchanged."""

    codes = (grpc.StatusCode.INVALID_ARGUMENT,)


class InvalidImage(InvalidArgument):
    """The image cannot be read or breaks a size limit (reason e.g. CORRUPT_IMAGE, TOO_MANY_PIXELS)."""


class Unauthenticated(HemascopeClientError):
    """No valid API key (or client certificate) was presented."""

    codes = (grpc.StatusCode.UNAUTHENTICATED,)


class PermissionDenied(HemascopeClientError):
    codes = (grpc.StatusCode.PERMISSION_DENIED,)


class NotFound(HemascopeClientError):
    """An unknown model, class or method was named."""

    codes = (grpc.StatusCode.NOT_FOUND,)


class FailedPrecondition(HemascopeClientError):
    codes = (grpc.StatusCode.FAILED_PRECONDITION,)


class ResourceExhausted(HemascopeClientError):
    """The gateway is at a limit (rate, streams per caller, queue): retry later, more slowly."""

    codes = (grpc.StatusCode.RESOURCE_EXHAUSTED,)


class DeadlineExceeded(HemascopeClientError):
    """The call did not finish within its timeout."""

    codes = (grpc.StatusCode.DEADLINE_EXCEEDED,)


class ServiceUnavailable(HemascopeClientError):
    """The gateway cannot be reached or cannot serve now (starting, stopping, a required service down)."""

    codes = (grpc.StatusCode.UNAVAILABLE,)


class InternalError(HemascopeClientError):
    """The server failed unexpectedly; it logged the details."""

    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)


_BY_CODE: dict[grpc.StatusCode, type[HemascopeClientError]] = {
    code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        ServiceUnavailable,
        InternalError,
    )
    for code in cls.codes
}
# The image reasons of hemascope.imaging.failures (not imported: the client stays free of PIL).
INVALID_IMAGE_REASONS = frozenset(
    {
        "INVALID_IMAGE",
        "EMPTY_IMAGE",
        "IMAGE_TOO_LARGE",
        "UNSUPPORTED_FORMAT",
        "MEDIA_TYPE_MISMATCH",
        "TOO_MANY_PIXELS",
        "CORRUPT_IMAGE",
    }
)


def _detail_from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> common_pb2.ErrorDetail | None:
    for key, value in metadata or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value if isinstance(value, bytes) else str(value).encode())
        except Exception:  # a malformed trailer must not hide the real error
            return None
        for packed in status.details:
            detail = common_pb2.ErrorDetail()
            if packed.Unpack(detail):
                return detail
    return None


def error_class(code: grpc.StatusCode, reason: str = "") -> type[HemascopeClientError]:
    """The exception class for a status code (and, for INVALID_ARGUMENT, the reason)."""
    cls = _BY_CODE.get(code, HemascopeClientError)
    if cls is InvalidArgument and reason in INVALID_IMAGE_REASONS:
        return InvalidImage
    return cls


def from_detail(detail: common_pb2.ErrorDetail) -> HemascopeClientError:
    """The exception for an ``ErrorDetail`` (e.g. a failed AnalyzeStream item)."""
    code = grpc.StatusCode.UNKNOWN
    for candidate in grpc.StatusCode:
        if candidate.value[0] == detail.code:
            code = candidate
    cls = error_class(code, detail.reason)
    return cls(detail.message, code=code, reason=detail.reason, field=detail.field, detail=detail)


def from_rpc_error(error: grpc.RpcError) -> HemascopeClientError:
    """The exception for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or code.name
    trailers_fn = getattr(error, "trailing_metadata", None)
    detail = _detail_from_metadata(trailers_fn() if callable(trailers_fn) else None)
    reason = detail.reason if detail is not None else ""
    field = detail.field if detail is not None else ""
    cls = error_class(code, reason)
    return cls(str(message), code=code, reason=reason, field=field, detail=detail)
