"""Detector service entry point: ``create_server(settings) -> (server, port)``."""

from __future__ import annotations

import grpc

from hemascope.server import ManagedServer, ServiceBinding, build_server
from hemascope.tracing import setup_tracing
from hemascope.v1 import detector_pb2, detector_pb2_grpc
from services.detector.core import DetectorCore
from services.detector.servicer import DetectorServicer
from services.detector.settings import DetectorSettings

SERVICE_NAME = detector_pb2.DESCRIPTOR.services_by_name["DetectorService"].full_name


def create_server(settings: DetectorSettings) -> tuple[ManagedServer, int]:
    """Starts the service (health NOT_SERVING) and loads the detector in the background.

    ``server.wait_ready()`` blocks until the model is loaded and raises its ``ConfigurationError`` if it
    failed (ONNX file missing, unreadable, or not a raw YOLOv8 head with class names).
    """
    tracing = setup_tracing(settings.tracing_config("detector"))
    core = DetectorCore(settings, tracer=tracing.tracer)
    servicer = DetectorServicer(core)

    def register(server: grpc.Server) -> None:
        detector_pb2_grpc.add_DetectorServiceServicer_to_server(servicer, server)

    return build_server(
        settings, [ServiceBinding(SERVICE_NAME, register)], core.load, on_stop=[core.close], tracing=tracing
    )
