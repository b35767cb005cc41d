"""Open Inference Protocol (KServe v2 ``inference.GRPCInferenceService``) on the gateway's port.

Built on the official generated code shipped in ``tritonclient.grpc`` (``service_pb2*``), so Triton and
KServe clients call the gateway unchanged. Served: ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata and ModelInfer; the rest of Triton's superset (statistics, repository, shared memory,
streaming, ...) stays UNIMPLEMENTED.

One model, ``hemascope`` (its version is the classifier bundle's version):

- input ``IMAGE``: BYTES, shape ``[-1]``: a batch of encoded images (JPEG, PNG, TIFF, BMP), one per element;
- outputs, one row per image: ``LABEL`` BYTES ``[-1]`` (consensus label), ``PROBABILITIES`` FP32 ``[-1, C]``
  (mean calibrated probability per class over the models, in the classes' order, which the ``classes``
  parameter of every response gives; ModelMetadata gives C, the number of classes, in the shape only),
  ``MALIGNANT_PROBABILITY`` FP32 ``[-1]``,
  ``REFER`` BOOL ``[-1]`` (refer the cell to a human), ``CONTENT_HASH`` BYTES ``[-1]``;
- optional request parameters: ``models`` (string, comma-separated classifier models; default all) and
  ``malignant_threshold`` (double, default 0.5).

Every image goes through ``GatewayCore.analyze`` (classification only), exactly like ``Analyze``. Outputs
are packed in ``raw_output_contents`` (little-endian; BYTES elements with a 4-byte length prefix), as
Triton does. There is no per-element error in the protocol: an unreadable image fails the whole call with
INVALID_ARGUMENT naming its element; a failed classification fails it with that part's status.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.domain import AnalysisReport, AnalyzeOptions, Capabilities
from hemascope import errors
from hemascope.errors import HemascopeError, InvalidArgument, NotFound, Unavailable
from hemascope.imaging.inputs import ImageInput

SERVICE_NAME = "inference.GRPCInferenceService"
MODEL_NAME = "hemascope"
INPUT_NAME = "IMAGE"
MAX_BATCH = 64
OUTPUTS: dict[str, str] = {
    "LABEL": "BYTES",
    "PROBABILITIES": "FP32",
    "MALIGNANT_PROBABILITY": "FP32",
    "REFER": "BOOL",
    "CONTENT_HASH": "BYTES",
}
# Services a classification needs: the model is ready when both answer.
_NEEDED = ("feature", "classifier")


class AnalysisCore(Protocol):
    """What this module needs of ``gateway.core.GatewayCore``."""

    def capabilities(self) -> Capabilities: ...

    def analyze(
        self, image: ImageInput, options: AnalyzeOptions, deadline_s: float | None
    ) -> AnalysisReport: ...


def decode_bytes_tensor(raw: bytes, count: int) -> list[bytes]:
    """The elements of a BYTES tensor in Triton's raw form: each a 4-byte little-endian length, then data."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument("IMAGE: truncated BYTES tensor (length prefix cut short)", field=INPUT_NAME)
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidArgument("IMAGE: truncated BYTES tensor (element cut short)", field=INPUT_NAME)
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count:
        raise InvalidArgument(
            f"IMAGE: shape says {count} elements, the data holds {len(items)}", field=INPUT_NAME
        )
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _parameters(request: service_pb2.ModelInferRequest, classes: Sequence[str]) -> AnalyzeOptions:
    models: tuple[str, ...] = ()
    threshold = 0.5
    for name, value in request.parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if name == "models" and kind == "string_param":
            models = tuple(m.strip() for m in value.string_param.split(",") if m.strip())
        elif name == "malignant_threshold" and kind in ("double_param", "int64_param"):
            threshold = float(getattr(value, kind))
        elif name in ("models", "malignant_threshold"):
            raise InvalidArgument(f"parameter {name!r} has the wrong type ({kind})", field=name)
        # Other parameters (e.g. Triton's own "sequence_id", "priority", "timeout") are ignored.
    del classes
    return AnalyzeOptions(models=models, malignant_threshold=threshold)


def _images(request: service_pb2.ModelInferRequest) -> list[bytes]:
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [tensor.name for tensor in request.inputs]
        raise InvalidArgument(f"expected one input named {INPUT_NAME!r}, got {names}", field="inputs")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"{INPUT_NAME} must be BYTES, got {tensor.datatype}", field=INPUT_NAME)
    if len(tensor.shape) != 1 or tensor.shape[0] < 1:
        raise InvalidArgument(f"{INPUT_NAME} must have shape [N] with N >= 1, got {list(tensor.shape)}")
    count = int(tensor.shape[0])
    if count > MAX_BATCH:
        raise InvalidArgument(
            f"{count} images in one request; the limit is {MAX_BATCH}", reason="BATCH_TOO_LARGE"
        )
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidArgument("expected one raw_input_contents entry (one input)", field=INPUT_NAME)
        return decode_bytes_tensor(request.raw_input_contents[0], count)
    items = list(tensor.contents.bytes_contents)
    if len(items) != count:
        raise InvalidArgument(f"IMAGE: shape says {count} elements, contents hold {len(items)}")
    return items


def _probabilities(report: AnalysisReport, classes: Sequence[str]) -> list[float]:
    assert report.classification is not None
    predictions = report.classification.predictions
    sums = dict.fromkeys(classes, 0.0)
    for prediction in predictions:
        for entry in prediction.probabilities:
            if entry.class_name in sums:
                sums[entry.class_name] += entry.probability
    return [sums[name] / max(1, len(predictions)) for name in classes]


_ERRORS: dict[grpc.StatusCode, type[HemascopeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
}


def _package_version() -> str:
    try:
        return version("hemascope")
    except PackageNotFoundError:
        return "unknown"


def _classification_error(report: AnalysisReport, index: int) -> HemascopeError:
    """The error of an image whose classification failed: the failed part's code, reason and message."""
    failed = [part for part in report.parts if not part.ok]
    part = next((p for p in failed if p.part == "classification"), failed[0] if failed else None)
    if part is None:
        return HemascopeError(f"image {index}: no classification in the report", reason="NO_RESULT")
    cls = _ERRORS.get(part.code, HemascopeError)
    return cls(f"image {index}: {part.part} failed: {part.message}", reason=part.reason)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The Open Inference Protocol over :class:`gateway.core.GatewayCore`."""

    def __init__(self, core: AnalysisCore, workers: int = 8) -> None:
        self._core = core
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kserve")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _ready_caps(self) -> Capabilities | None:
        try:
            return self._core.capabilities()
        except HemascopeError:
            return None

    def _check_model(self, name: str, version: str, caps: Capabilities | None) -> None:
        if name != MODEL_NAME:
            raise NotFound(f"unknown model {name!r}; this server has {MODEL_NAME!r}", field="model_name")
        if version and (caps is None or version != caps.bundle_version):
            served = caps.bundle_version if caps else "none yet"
            raise NotFound(f"unknown version {version!r} of {MODEL_NAME!r} (served: {served})")

    def ServerLive(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._ready_caps() is not None)

    def ModelReady(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        caps = self._ready_caps()
        self._check_model(request.name, request.version, caps)
        serving = {state.name for state in caps.services if state.serving} if caps else set()
        ready = caps is not None and bool(caps.classes) and all(name in serving for name in _NEEDED)
        return service_pb2.ModelReadyResponse(ready=ready)

    def ServerMetadata(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        return service_pb2.ServerMetadataResponse(name="hemascope", version=_package_version(), extensions=[])

    def ModelMetadata(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
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

    def ModelInfer(  # noqa: N802 (gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        caps = self._ready_caps()
        self._check_model(request.model_name, request.model_version, caps)
        if caps is None or not caps.classes:
            raise Unavailable("the classifier service is not available", reason="SERVICE_UNAVAILABLE")
        wanted = [output.name for output in request.outputs] or list(OUTPUTS)
        unknown = [name for name in wanted if name not in OUTPUTS]
        if unknown:
            raise InvalidArgument(f"unknown output(s) {unknown}; this model has {list(OUTPUTS)}")
        options = _parameters(request, caps.classes)
        images = _images(request)
        remaining = context.time_remaining()
        deadline_s = remaining if remaining is not None and remaining < 1e6 else None
        futures = [
            self._executor.submit(self._core.analyze, ImageInput(data), options, deadline_s)
            for data in images
        ]
        reports: list[AnalysisReport] = []
        for index, future in enumerate(futures):
            try:
                report = future.result()
            except HemascopeError as exc:
                exc.message = f"image {index}: {exc.message}"
                exc.field = exc.field or f"{INPUT_NAME}[{index}]"
                raise
            if report.classification is None:
                raise _classification_error(report, index)
            reports.append(report)
        return _response(request, caps, reports, wanted)


def _response(
    request: Any, caps: Capabilities, reports: list[AnalysisReport], wanted: list[str]
) -> service_pb2.ModelInferResponse:
    n = len(reports)
    columns: dict[str, tuple[list[int], bytes]] = {}
    consensus = [report.classification.consensus for report in reports if report.classification is not None]
    if "LABEL" in wanted:
        columns["LABEL"] = ([n], encode_bytes_tensor([c.label.encode() for c in consensus]))
    if "PROBABILITIES" in wanted:
        rows = [_probabilities(report, caps.classes) for report in reports]
        columns["PROBABILITIES"] = ([n, len(caps.classes)], np.asarray(rows, dtype="<f4").tobytes())
    if "MALIGNANT_PROBABILITY" in wanted:
        values = [c.malignant_probability for c in consensus]
        columns["MALIGNANT_PROBABILITY"] = ([n], np.asarray(values, dtype="<f4").tobytes())
    if "REFER" in wanted:
        columns["REFER"] = ([n], np.asarray([c.refer for c in consensus], dtype=np.bool_).tobytes())
    if "CONTENT_HASH" in wanted:
        hashes = [report.content_hash.encode() for report in reports]
        columns["CONTENT_HASH"] = ([n], encode_bytes_tensor(hashes))
    response = service_pb2.ModelInferResponse(
        model_name=MODEL_NAME, model_version=caps.bundle_version, id=request.id
    )
    response.parameters["classes"].string_param = ",".join(caps.classes)
    for name in wanted:
        shape, raw = columns[name]
        response.outputs.add(name=name, datatype=OUTPUTS[name], shape=shape)
        response.raw_output_contents.append(raw)
    return response


def add_to_server(server: grpc.Server, core: AnalysisCore) -> str:
    """Registers the Open Inference Protocol service for ``core`` on ``server``; returns its full name (for
    health and reflection). The servicer's few idle threads end with the process."""
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
    return SERVICE_NAME
