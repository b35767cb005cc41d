"""Feature service entry point: ``create_server(settings) -> (server, port)``."""

from __future__ import annotations

import grpc

from hemascope.cache import EmbeddingCache
from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.tracing import setup_tracing
from hemascope.v1 import feature_pb2, feature_pb2_grpc
from services.feature.core import FeatureCore
from services.feature.servicer import FeatureServicer
from services.feature.settings import FeatureSettings

SERVICE_NAME = feature_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name


def create_server(
    settings: FeatureSettings, *, cache: EmbeddingCache | None = None
) -> tuple[ManagedServer, int]:
    """Starts the service (health NOT_SERVING) and loads the backbone in the background.

    ``server.wait_ready()`` blocks until the backbone is loaded and raises the load error if it failed.
    """
    tracing = setup_tracing(settings.tracing_config("feature"))
    core = FeatureCore(settings, cache=cache, tracer=tracing.tracer)
    servicer = FeatureServicer(core)

    def register(server: grpc.Server) -> None:
        feature_pb2_grpc.add_FeatureServiceServicer_to_server(servicer, server)

    return build_server(
        settings, [ServiceBinding(SERVICE_NAME, register)], core.load, on_stop=[core.close], tracing=tracing
    )
