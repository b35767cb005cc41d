"""The gateway's server interceptor: every public call is admitted by the data plane before its handler runs.

Health and reflection are exempt (probes and tooling work without credentials). Every other call:
:meth:`~gateway.dataplane.DataPlane.admit` resolves its caller (or refuses it: UNAUTHENTICATED, audited
with the peer address) and refuses it while the audit trail is down (UNAVAILABLE); the caller is then bound
to the call's context (:func:`caller_of`). Calls that do not audit themselves (everything but Analyze,
AnalyzeStream and ModelInfer, audited per image, and PromoteBundle, audited with its bundle) are audited
here as one record each.

A refusal here happens outside the kernel's ServiceInterceptor, so it is counted in the per-RPC metric and
turned into a status with an ErrorDetail here.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from gateway.dataplane import DataPlane, short_rpc
from gateway.identity import ANONYMOUS_CALLER, Caller
from hemascope.errors import HemascopeError
from hemascope.interceptors import Behavior, abort_with, rewrap
from hemascope.telemetry import RPC_REQUESTS

# Kubernetes probes and tooling must work without a key.
EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
#: Methods whose adapters write their own records (one per image analysed; PromoteBundle's names the bundle).
SELF_AUDITED = frozenset({"Analyze", "AnalyzeStream", "ModelInfer", "PromoteBundle"})

_callers: weakref.WeakKeyDictionary[grpc.ServicerContext, Caller] = weakref.WeakKeyDictionary()
_callers_lock = threading.Lock()


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller admitted for the RPC ``context`` belongs to (anonymous when none was bound)."""
    with _callers_lock:
        return _callers.get(context, ANONYMOUS_CALLER)


def _bind(context: grpc.ServicerContext, caller: Caller) -> None:
    with _callers_lock:
        _callers[context] = caller


class GatewayInterceptor(grpc.ServerInterceptor):
    """Admits every non-exempt call through ``plane``."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        return rewrap(handler, self._wrap(method, metadata))

    def _admit(self, method: str, metadata: Any, context: grpc.ServicerContext) -> Caller:
        try:
            caller = self._plane.admit(method, metadata, context.peer(), context.auth_context())
        except HemascopeError as exc:
            RPC_REQUESTS.labels(method, exc.code.name).inc()
            abort_with(context, exc)
            raise  # unreachable: abort raises
        _bind(context, caller)
        return caller

    def _wrap(self, method: str, metadata: Any) -> Callable[[Behavior, bool], Behavior]:
        plane, rpc = self._plane, short_rpc(method)
        self_audited = rpc in SELF_AUDITED

        def failed(caller: Caller, context: grpc.ServicerContext, started: float) -> None:
            code = context.code()  # type: ignore[attr-defined]  # set by the kernel's abort
            outcome = code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL.name
            plane.record_quietly(caller, rpc, outcome, started)

        def succeeded(caller: Caller, context: grpc.ServicerContext, started: float) -> None:
            try:
                plane.record(caller, rpc, "OK", started=started)
            except HemascopeError as exc:  # no answer leaves without its audit record
                RPC_REQUESTS.labels(method, exc.code.name).inc()
                abort_with(context, exc)

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                caller = self._admit(method, metadata, context)
                if self_audited:
                    return behavior(request, context)
                started = plane.now()
                try:
                    result = behavior(request, context)
                except BaseException:
                    failed(caller, context, started)
                    raise
                succeeded(caller, context, started)
                return result

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                caller = self._admit(method, metadata, context)
                if self_audited:
                    yield from behavior(request, context)
                    return
                started = plane.now()
                try:
                    yield from behavior(request, context)
                except BaseException:
                    failed(caller, context, started)
                    raise
                succeeded(caller, context, started)

            return stream if streaming else unary

        return wrap
