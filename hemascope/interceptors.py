"""The one server interceptor: per-RPC metrics, and domain errors mapped to gRPC status codes.

A ``HemascopeError`` becomes its status code, its message and an ``ErrorDetail`` packed into the
``google.rpc.Status`` details. Anything else becomes INTERNAL with a generic message; the traceback is
logged, never sent to the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from hemascope.errors import HemascopeError
from hemascope.logs import get_logger
from hemascope.telemetry import RPC_IN_FLIGHT, RPC_LATENCY, RPC_REQUESTS
from hemascope.tracing import record_call_status
from hemascope.v1 import common_pb2

log = get_logger(__name__)

INTERNAL_MESSAGE = "internal error; it has been logged"
#: Longest message, reason and field sent back. The message travels twice in the trailing metadata (as
#: grpc-message and in the packed status); gRPC's metadata limit is 8 KiB, past which the caller would
#: only see "Stream removed". Messages that quote caller input use hemascope.errors.echo; this is the cap
#: for every other path.
MAX_MESSAGE_CHARS = 1024
MAX_TOKEN_CHARS = 128


def capped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_detail(error: HemascopeError) -> common_pb2.ErrorDetail:
    """The protobuf form of a domain error (used for failed calls and for failed batch items)."""
    return common_pb2.ErrorDetail(
        code=error.code.value[0],
        reason=capped(error.reason, MAX_TOKEN_CHARS),
        message=capped(error.message),
        field=capped(error.field, MAX_TOKEN_CHARS),
    )


def _status_for(error: HemascopeError) -> grpc.Status:
    detail = any_pb2.Any()
    packed = error_detail(error)
    detail.Pack(packed)
    status = status_pb2.Status(code=error.code.value[0], message=packed.message, details=[detail])
    return cast(grpc.Status, rpc_status.to_status(status))


def abort_with(context: grpc.ServicerContext, error: HemascopeError) -> None:
    """Ends the call with ``error``'s status, message and ErrorDetail (raises); for interceptors that
    refuse a call before the kernel's ServiceInterceptor runs."""
    record_call_status(error.code, error.reason)
    context.abort_with_status(_status_for(error))


Behavior = Callable[[Any, grpc.ServicerContext], Any]


def rewrap(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[Behavior, bool], Behavior]
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


def _status_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The code set on the call so far (grpcio's context has ``code()``; the stubs lack it)."""
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]
    return code


def _handle(exc: Exception, context: grpc.ServicerContext, method: str) -> None:
    """Turns ``exc`` into an aborted call. Always raises (context.abort raises)."""
    if isinstance(exc, HemascopeError):
        log.info("rpc_error", method=method, code=exc.code.name, reason=exc.reason)
        record_call_status(exc.code, exc.reason)
        context.abort_with_status(_status_for(exc))
    code = _status_code(context)
    if code is not None and code != grpc.StatusCode.OK:
        # The handler chose a status (context.abort, or set_code then raise): keep it, and its details, so
        # grpc does not append "Exception calling application: <message>" for the caller to see.
        details = context.details()  # type: ignore[attr-defined]
        text = details.decode() if isinstance(details, bytes) else str(details or "")
        context.abort(code, capped(text) or INTERNAL_MESSAGE)
    log.error("rpc_internal_error", method=method, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def _code_of(context: grpc.ServicerContext) -> str:
    code = _status_code(context)
    return "OK" if code is None else str(code.name)


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every RPC handler with metrics and error mapping."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_unary(behavior: Callable[[Any, grpc.ServicerContext], Any], method: str) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            RPC_IN_FLIGHT.labels(method).inc()
            try:
                return behavior(request, context)
            except Exception as exc:
                _handle(exc, context, method)
                raise  # unreachable: _handle aborts
            finally:
                RPC_IN_FLIGHT.labels(method).dec()
                RPC_LATENCY.labels(method).observe(time.perf_counter() - start)
                RPC_REQUESTS.labels(method, _code_of(context)).inc()

        return wrapped

    @staticmethod
    def _wrap_stream(
        behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str
    ) -> Callable[..., Iterator[Any]]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            RPC_IN_FLIGHT.labels(method).inc()
            try:
                yield from behavior(request, context)
            except Exception as exc:
                _handle(exc, context, method)
                raise
            finally:
                RPC_IN_FLIGHT.labels(method).dec()
                RPC_LATENCY.labels(method).observe(time.perf_counter() - start)
                RPC_REQUESTS.labels(method, _code_of(context)).inc()

        return wrapped
