"""Gateway entry point: ``create_server(settings) -> (server, port)``.

Hosts AnalysisService and the Open Inference Protocol (KServe v2 GRPCInferenceService) as two thin
adapters over one data plane (:mod:`gateway.dataplane`: identity, fail-closed audit, limits, deadlines),
and GatewayAdminService (bundle promotion, admin callers only: :mod:`gateway.admin_servicer`) behind the
same admission and audit, with optional (m)TLS. Health is NOT_SERVING until the downstream channels are
open and described, and while the audit trail cannot be written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from gateway import kserve
from gateway.admin_servicer import GatewayAdminServicer
from gateway.audit import AuditLog, read_key_file
from gateway.audit_trail import AuditTrail
from gateway.auth import ApiKeyStore
from gateway.core import GatewayCore
from gateway.dataplane import BoundedRunner, DataPlane
from gateway.identity import Identifier
from gateway.interceptor import GatewayInterceptor
from gateway.limits import StreamLimiter
from gateway.promotion import BundlePromoter
from gateway.servicer import AnalysisServicer
from gateway.settings import GatewaySettings
from gateway.site_monitor import SiteMonitor
from gateway.tls import server_credentials
from hemascope.logs import get_logger
from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.site.drift import DriftRule
from hemascope.tracing import setup_tracing
from hemascope.v1 import admin_pb2, admin_pb2_grpc, analysis_pb2, analysis_pb2_grpc

log = get_logger(__name__)

SERVICE_NAME = analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name
KSERVE_SERVICE_NAME = "inference.GRPCInferenceService"
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["GatewayAdminService"].full_name
AUDIT_FAULT = "audit"


def _audit_trail(settings: GatewaySettings) -> AuditTrail | None:
    if settings.audit_log is None:
        log.warning("audit_off", detail="no audit_log: requests are not audited")
        return None
    key = read_key_file(settings.audit_key_file) if settings.audit_key_file is not None else None
    return AuditTrail(AuditLog(settings.audit_log, key), retry_s=settings.audit_retry_s)


def create_server(settings: GatewaySettings) -> tuple[ManagedServer, int]:
    """Starts the gateway (health NOT_SERVING) and connects to the services in the background.

    Raises ConfigurationError at once for unreadable key, TLS or audit files.
    """
    store = ApiKeyStore.from_file(settings.api_keys_file) if settings.api_keys_file is not None else None
    if store is None:
        log.warning("authentication_off", detail="no api_keys_file: callers are anonymous or named by cert")
    identifier = Identifier(store, required=settings.require_api_key and store is not None)
    credentials = server_credentials(settings)
    promoter = BundlePromoter(settings)
    audit = _audit_trail(settings)

    tracing = setup_tracing(settings.tracing_config("gateway"))
    core = GatewayCore(settings, tracing=tracing)
    stream_executor = ThreadPoolExecutor(settings.stream_workers, thread_name_prefix="gateway-stream")
    batch_executor = ThreadPoolExecutor(settings.batch_capacity, thread_name_prefix="gateway-batch")
    plane = DataPlane(
        core,
        identifier,
        StreamLimiter(settings.max_streams_per_caller),
        BoundedRunner(batch_executor, settings.batch_capacity),
        settings.batch_parallel,
        audit,
        sites=SiteMonitor(
            DriftRule(
                settings.site_window,
                settings.site_min_images,
                settings.site_flag_share,
                settings.site_clear_share,
            ),
            settings.site_max_callers,
        ),
        site_profiles=settings.site_profiles,
    )
    servicer = AnalysisServicer(
        plane, stream_executor, settings.max_stream_in_flight, settings.stream_idle_timeout_s
    )

    def register(server: grpc.Server) -> None:
        analysis_pb2_grpc.add_AnalysisServiceServicer_to_server(servicer, server)

    def register_kserve(server: grpc.Server) -> None:
        kserve.add_to_server(server, plane)

    admin = GatewayAdminServicer(plane, promoter, core.forget_capabilities)

    def register_admin(server: grpc.Server) -> None:
        admin_pb2_grpc.add_GatewayAdminServiceServicer_to_server(admin, server)

    bindings = [
        ServiceBinding(SERVICE_NAME, register),
        ServiceBinding(KSERVE_SERVICE_NAME, register_kserve),
        ServiceBinding(ADMIN_SERVICE_NAME, register_admin),
    ]
    on_stop: list[Callable[[], None]] = [
        core.close,
        promoter.close,
        lambda: stream_executor.shutdown(wait=False),
        lambda: batch_executor.shutdown(wait=False, cancel_futures=True),
    ]
    if audit is not None:
        on_stop.append(audit.close)
    server, port = build_server(
        settings,
        bindings,
        core.load,
        on_stop,
        interceptors=[GatewayInterceptor(plane)],
        credentials=credentials,
        tracing=tracing,
    )
    if audit is not None:
        audit.set_on_change(lambda up: server.set_fault(AUDIT_FAULT, not up))
        audit.start()
    return server, port
