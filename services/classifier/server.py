"""Classifier service entry point: ``create_server(settings) -> (server, port)``."""

from __future__ import annotations

import grpc

from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.tracing import setup_tracing
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.core import ClassifierCore
from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import ClassifierSettings

#: Administrative RPCs: only callers presenting an admin identity (settings admin_subjects) may call them.
ADMIN_METHODS = ("/hemascope.v1.ClassifierService/ReloadBundle",)
SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name


def create_server(settings: ClassifierSettings) -> tuple[ManagedServer, int]:
    """Starts the service (health NOT_SERVING) and loads the bundle in the background.

    ``server.wait_ready()`` blocks until the bundle is loaded and raises its ``BundleError`` if it failed
    (no bundle configured, missing, tampered, truncated or holding disallowed types).
    """
    tracing = setup_tracing(settings.tracing_config("classifier"))
    core = ClassifierCore(settings, tracer=tracing.tracer)
    servicer = ClassifierServicer(core)

    def register(server: grpc.Server) -> None:
        classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(servicer, server)

    return build_server(
        settings,
        [ServiceBinding(SERVICE_NAME, register)],
        core.load,
        on_stop=[core.close],
        admin_methods=ADMIN_METHODS,
        tracing=tracing,
    )
