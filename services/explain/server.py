"""Explain service entry point: ``create_server(settings) -> (server, port)``."""

from __future__ import annotations

import grpc

from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.tracing import setup_tracing
from hemascope.v1 import explain_pb2, explain_pb2_grpc
from services.explain.cache import ExplainCache
from services.explain.core import ExplainCore
from services.explain.servicer import ExplainServicer
from services.explain.settings import ExplainSettings

SERVICE_NAME = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name


def create_server(
    settings: ExplainSettings, *, cache: ExplainCache | None = None
) -> tuple[ManagedServer, int]:
    """Starts the service (health NOT_SERVING) and loads the bundle and backbone in the background.

    ``server.wait_ready()`` blocks until they are loaded and raises the load error if loading failed (no
    bundle, a bad bundle, or backbone weights other than the bundle's).
    """
    tracing = setup_tracing(settings.tracing_config("explain"))
    core = ExplainCore(settings, cache=cache, tracer=tracing.tracer)
    servicer = ExplainServicer(core)

    def register(server: grpc.Server) -> None:
        explain_pb2_grpc.add_ExplainServiceServicer_to_server(servicer, server)

    return build_server(
        settings, [ServiceBinding(SERVICE_NAME, register)], core.load, on_stop=[core.close], tracing=tracing
    )
