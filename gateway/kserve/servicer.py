"""The Open Inference Protocol's RPCs over the gateway's data plane.

Served: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer; the rest of
Triton's superset (statistics, repository, shared memory, streaming, ...) stays UNIMPLEMENTED.

ModelInfer analyses every image of the batch through :meth:`gateway.dataplane.DataPlane.analyze_batch`
(classification only), exactly like ``Analyze``: each image is audited, at most a few run at once, and the
first failure stops the batch (nothing more is sent to the services). There is no per-element error in the
protocol: an unreadable image fails the whole call with INVALID_ARGUMENT naming its element; a failed
classification fails it with that part's status.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.dataplane import DataPlane
from gateway.domain import AnalysisReport, Capabilities
from gateway.interceptor import caller_of
from gateway.kserve import converters
from gateway.kserve.codec import INPUT_NAME
from gateway.kserve.converters import MODEL_NAME, OUTPUTS
from hemascope.deadlines import remaining_seconds
from hemascope.errors import HemascopeError, NotFound, Unavailable, echo

SERVICE_NAME = "inference.GRPCInferenceService"
RPC = "ModelInfer"
# Services a classification needs: the model is ready when both answer.
_NEEDED = ("feature", "classifier")


def _package_version() -> str:
    try:
        return version("hemascope")
    except PackageNotFoundError:
        return "unknown"


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The Open Inference Protocol over :class:`gateway.dataplane.DataPlane`."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    def _ready_caps(self) -> Capabilities | None:
        try:
            return self._plane.capabilities()
        except HemascopeError:
            return None

    @staticmethod
    def _check_model(name: str, model_version: str, caps: Capabilities | None) -> None:
        if name != MODEL_NAME:
            raise NotFound(f"unknown model {echo(name)}; this server has {MODEL_NAME!r}", field="model_name")
        if model_version and (caps is None or model_version != caps.bundle_version):
            served = caps.bundle_version if caps else "none yet"
            raise NotFound(f"unknown version {echo(model_version)} of {MODEL_NAME!r} (served: {served})")

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self._ready_caps() is not None)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        caps = self._ready_caps()
        self._check_model(request.name, request.version, caps)
        serving = {state.name for state in caps.services if state.serving} if caps else set()
        ready = caps is not None and bool(caps.classes) and all(name in serving for name in _NEEDED)
        return service_pb2.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_pb2.ServerMetadataResponse(name="hemascope", version=_package_version(), extensions=[])

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        caps = self._ready_caps()
        self._check_model(request.name, request.version, caps)
        classes = len(caps.classes) if caps and caps.classes else -1
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        shapes = {name: [-1] for name in OUTPUTS} | {"PROBABILITIES": [-1, classes]}
        return service_pb2.ModelMetadataResponse(
            name=MODEL_NAME,
            versions=[caps.bundle_version] if caps and caps.bundle_version else [],
            platform="hemascope",
            inputs=[tensor(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
            outputs=[tensor(name=name, datatype=kind, shape=shapes[name]) for name, kind in OUTPUTS.items()],
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        plane, caller = self._plane, caller_of(context)
        view = converters.options_view(request)
        started = plane.now()
        try:
            caps = self._ready_caps()
            self._check_model(request.model_name, request.model_version, caps)
            if caps is None or not caps.classes:
                raise Unavailable("the classifier service is not available", reason="SERVICE_UNAVAILABLE")
            wanted = converters.wanted_outputs(request)
            options = converters.options(request)
            images = converters.images(request)
        except HemascopeError as exc:  # refused before any image was analysed: one record for the call
            plane.record_quietly(caller, RPC, exc.code.name, started, view)
            raise
        reports = plane.analyze_batch(
            caller,
            RPC,
            images,
            options,
            remaining_seconds(context),
            view,
            check=_classified,
            field=INPUT_NAME,
        )
        return converters.response(request, caps, reports, wanted)


def _classified(index: int, report: AnalysisReport) -> None:
    if report.classification is None:
        raise converters.classification_error(report, index)


def add_to_server(server: grpc.Server, plane: DataPlane) -> str:
    """Registers the Open Inference Protocol service for ``plane`` on ``server``; returns its full name (for
    health and reflection)."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)
    return SERVICE_NAME
