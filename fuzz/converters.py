"""Fuzzer: every request converter, with the checks that follow it before any model runs.

The input is a serialized request message; its first byte picks which: AnalyzeRequest (the gateway's
converters and option validation), ModelInferRequest (the Open Inference Protocol's converters),
ClassifyRequest (the classifier's converters, model selection and embedding checks against a bundle's
manifest), DetectRequest (the detector's converters and option ranges) or ExplainRequest (the explain
service's converters). Bytes that do not parse are the protobuf runtime's business and are skipped. Any
parsed request must convert or be refused with a domain error whose message stays short."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import atheris
from google.protobuf.message import DecodeError, Message

with atheris.instrument_imports(include=["gateway", "services", "hemascope"]):
    from tritonclient.grpc import service_pb2

    from fuzz.harness import run
    from gateway import converters as gateway_converters
    from gateway.core import GatewayCore
    from gateway.kserve import codec
    from gateway.kserve import converters as kserve_converters
    from gateway.settings import GatewaySettings
    from hemascope.bundle.manifest import Manifest
    from hemascope.data import REPO_ROOT
    from hemascope.errors import HemascopeError
    from hemascope.interceptors import error_detail
    from hemascope.v1 import analysis_pb2, classifier_pb2, detector_pb2, explain_pb2
    from services.classifier import converters as classifier_converters
    from services.classifier.inputs import embedding_matrix, select_models
    from services.detector import converters as detector_converters
    from services.detector.core import resolve_options
    from services.explain import converters as explain_converters

MANIFEST = Manifest.from_json((REPO_ROOT / "models" / "bloodcells-5class" / "manifest.json").read_text())
GATEWAY = GatewayCore(GatewaySettings.model_validate({"metrics_port": None}))


def analyze(message: analysis_pb2.AnalyzeRequest) -> None:
    gateway_converters.image_from_request(message)
    options = gateway_converters.options_from_request(message)
    GATEWAY._validate(options)


def infer(message: service_pb2.ModelInferRequest) -> None:
    kserve_converters.wanted_outputs(message)
    kserve_converters.options(message)
    kserve_converters.images(message)
    kserve_converters.options_view(message)


def classify(message: classifier_pb2.ClassifyRequest) -> None:
    embeddings = classifier_converters.embeddings_from_request(message)
    select_models(MANIFEST, list(message.models))
    embedding_matrix(MANIFEST, embeddings, max_items=64, require_provenance=True)


def detect(message: detector_pb2.DetectRequest) -> None:
    detector_converters.image_from_proto(message.image)
    resolve_options(detector_converters.options_from_proto(message.options), 300)


def explain(message: explain_pb2.ExplainRequest) -> None:
    explain_converters.image_from_proto(message.image)
    embedding = explain_converters.embedding_from_request(message)
    if embedding is not None:
        embedding_matrix(MANIFEST, [embedding], max_items=1, require_provenance=False)


CASES: list[tuple[type[Message], Callable[[Message], None]]] = [
    (analysis_pb2.AnalyzeRequest, analyze),  # type: ignore[list-item]
    (service_pb2.ModelInferRequest, infer),
    (classifier_pb2.ClassifyRequest, classify),  # type: ignore[list-item]
    (detector_pb2.DetectRequest, detect),  # type: ignore[list-item]
    (explain_pb2.ExplainRequest, explain),  # type: ignore[list-item]
]


def target(data: bytes) -> None:
    if not data:
        return
    kind, convert = CASES[data[0] % len(CASES)]
    try:
        message = kind.FromString(data[1:])
    except (DecodeError, RecursionError, ValueError):
        return
    try:
        convert(message)
    except HemascopeError as exc:
        detail = error_detail(exc)  # what the caller would receive: always small
        if len(detail.message) > 1024 or len(detail.field) > 128:
            raise AssertionError(f"oversized error detail: {exc.message[:200]}") from exc


def seeds() -> Iterator[bytes]:
    request = analysis_pb2.AnalyzeRequest()
    request.image.data = b"\x89PNG\r\n\x1a\n"
    request.image.media_type = "image/png"
    request.options.explain = True
    request.options.explain_class = "myeloblast"
    request.options.models.append("svm")
    yield b"\x00" + request.SerializeToString()
    infer_request = service_pb2.ModelInferRequest(model_name="hemascope")
    infer_request.inputs.add(name="IMAGE", datatype="BYTES", shape=[2])
    infer_request.raw_input_contents.append(codec.encode_bytes_tensor([b"a", b"bc"]))
    infer_request.parameters["models"].string_param = "svm,xgboost"
    yield b"\x01" + infer_request.SerializeToString()
    classify_request = classifier_pb2.ClassifyRequest(models=["svm"])
    embedding = classify_request.embeddings.add()
    embedding.values.extend([0.5] * MANIFEST.dimension)
    embedding.dimension = MANIFEST.dimension
    embedding.backbone, embedding.weights_hash = MANIFEST.backbone, MANIFEST.weights_hash
    embedding.preprocessing = MANIFEST.preprocessing
    yield b"\x02" + classify_request.SerializeToString()
    # An input-check kind this build does not define (a newer feature service): referred, never an error.
    newer = classifier_pb2.ClassifyRequest()
    newer.embeddings.add().CopyFrom(embedding)
    newer.embeddings[0].input_check.kind = 103  # type: ignore[assignment]
    yield b"\x02" + newer.SerializeToString()
    detect_request = detector_pb2.DetectRequest()
    detect_request.options.confidence, detect_request.options.iou = 0.25, 0.5
    yield b"\x03" + detect_request.SerializeToString()
    explain_request = explain_pb2.ExplainRequest(model="svm")
    explain_request.embedding.CopyFrom(embedding)
    yield b"\x04" + explain_request.SerializeToString()


if __name__ == "__main__":
    run("converters", target, seeds())
