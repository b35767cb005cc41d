"""Gateway entry point: ``create_server(settings) -> (server, port)``.

Hosts AnalysisService and the Open Inference Protocol (KServe v2 GRPCInferenceService), behind API-key
authentication, optional (m)TLS, per-caller stream limits and the audit trail. Health is NOT_SERVING until
the downstream channels are open and described.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from gateway import kserve
from gateway.audit import AuditLog, read_key_file
from gateway.auth import ApiKeyStore, AuthInterceptor
from gateway.core import GatewayCore
from gateway.limits import StreamLimiter
from gateway.servicer import AnalysisServicer
from gateway.settings import GatewaySettings
from gateway.tls import server_credentials
from hemascope.logs import get_logger
from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc

log = get_logger(__name__)

SERVICE_NAME = analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name
KSERVE_SERVICE_NAME = "inference.GRPCInferenceService"


def _kserve_binding(core: GatewayCore) -> ServiceBinding:
    """The KServe v2 binding (Open Inference Protocol) over the same core."""

    def register(server: grpc.Server) -> None:
        name = kserve.add_to_server(server, core)
        if name != KSERVE_SERVICE_NAME:
            raise RuntimeError(f"gateway.kserve registered {name!r}, expected {KSERVE_SERVICE_NAME!r}")

    return ServiceBinding(KSERVE_SERVICE_NAME, register)


def create_server(settings: GatewaySettings) -> tuple[ManagedServer, int]:
    """Starts the gateway (health NOT_SERVING) and connects to the services in the background.

    Raises ConfigurationError at once for unreadable key, TLS or audit files.
    """
    store = ApiKeyStore.from_file(settings.api_keys_file) if settings.api_keys_file is not None else None
    if store is None:
        log.warning("authentication_off", detail="no api_keys_file: every caller is 'anonymous'")
    auth = AuthInterceptor(store, required=settings.require_api_key and store is not None)
    credentials = server_credentials(settings)
    if credentials is None:
        log.warning("tls_off", detail="no tls_cert_file: the gateway port is plaintext")
    audit: AuditLog | None = None
    if settings.audit_log is not None:
        key = read_key_file(settings.audit_key_file) if settings.audit_key_file is not None else None
        audit = AuditLog(settings.audit_log, key)
    else:
        log.warning("audit_off", detail="no audit_log: requests are not audited")

    core = GatewayCore(settings)
    stream_executor = ThreadPoolExecutor(settings.stream_workers, thread_name_prefix="gateway-stream")
    servicer = AnalysisServicer(core, stream_executor, StreamLimiter(settings.max_streams_per_caller), audit)

    def register(server: grpc.Server) -> None:
        analysis_pb2_grpc.add_AnalysisServiceServicer_to_server(servicer, server)

    bindings = [ServiceBinding(SERVICE_NAME, register), _kserve_binding(core)]
    on_stop: list[Callable[[], None]] = [core.close, lambda: stream_executor.shutdown(wait=False)]
    if audit is not None:
        on_stop.append(audit.close)
    return build_server(settings, bindings, core.load, on_stop, interceptors=[auth], credentials=credentials)
