"""Administrative RPCs (e.g. ``ReloadBundle``) answer only callers that present the admin identity.

The identity is the common name of a client certificate the server verified (mutual TLS, settings
``tls_client_ca_file``), listed in ``admin_subjects``. Anyone else, including every caller of a server
without mutual TLS, gets PERMISSION_DENIED, and the refusal is logged with the peer address. Network
policies stay as a second layer: reaching the port is not enough.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc

from hemascope.errors import PermissionDenied
from hemascope.interceptors import Behavior, abort_with, rewrap
from hemascope.logs import get_logger
from hemascope.telemetry import RPC_REQUESTS
from hemascope.tls import peer_common_name

log = get_logger(__name__)


class AdminInterceptor(grpc.ServerInterceptor):
    """Refuses ``methods`` (full names, ``/package.Service/Method``) unless the caller's verified certificate
    names one of ``subjects``."""

    def __init__(self, methods: Collection[str], subjects: Collection[str], env_prefix: str) -> None:
        self._methods = frozenset(methods)
        self._subjects = frozenset(subjects)
        self._setting = f"{env_prefix}ADMIN_SUBJECTS"

    def allowed(self, auth_context: Any) -> bool:
        name = peer_common_name(auth_context or {})
        return name is not None and name in self._subjects

    def refusal(self, method: str) -> PermissionDenied:
        rpc = method.rsplit("/", 1)[-1]
        if not self._subjects:
            return PermissionDenied(
                f"{rpc} is an administrative RPC and no admin identity is configured: set {self._setting} "
                "and mutual TLS (TLS_CLIENT_CA_FILE), then call it with that client certificate",
                reason="ADMIN_ONLY",
            )
        return PermissionDenied(
            f"{rpc} is an administrative RPC: call it with a client certificate named in {self._setting}",
            reason="ADMIN_ONLY",
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method not in self._methods:
            return handler

        def wrap(behavior: Behavior, streaming: bool) -> Behavior:
            def check(context: grpc.ServicerContext) -> None:
                if self.allowed(context.auth_context()):
                    return
                log.warning("admin_refused", method=method, peer=context.peer())
                RPC_REQUESTS.labels(method, grpc.StatusCode.PERMISSION_DENIED.name).inc()
                abort_with(context, self.refusal(method))

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                check(context)
                return behavior(request, context)

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                check(context)
                yield from behavior(request, context)

            return stream if streaming else unary

        return rewrap(handler, wrap)
