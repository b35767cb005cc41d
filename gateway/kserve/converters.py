"""Open Inference Protocol messages <-> the gateway's domain types.

One model, ``hemascope`` (its version is the classifier bundle's version):

- input ``IMAGE``: BYTES, shape ``[-1]``: a batch of encoded images (JPEG, PNG, TIFF, BMP), one per element;
- outputs, one row per image: ``LABEL`` BYTES ``[-1]`` (consensus label), ``PROBABILITIES`` FP32 ``[-1, C]``
  (mean calibrated probability per class over the models, in the classes' order, which the ``classes``
  parameter of every response gives; ModelMetadata gives C, the number of classes, in the shape only),
  ``MALIGNANT_PROBABILITY`` FP32 ``[-1]``, ``REFER`` BOOL ``[-1]`` (refer the cell to a human),
  ``CONTENT_HASH`` BYTES ``[-1]``;
- optional request parameters: ``models`` (string, comma-separated classifier models; default all) and
  ``malignant_threshold`` (double, default 0.5).

Outputs are packed in ``raw_output_contents`` (little-endian; BYTES elements with a 4-byte length
prefix), as Triton does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from gateway.converters import MAX_MODELS, checked_name
from gateway.domain import AnalysisReport, AnalyzeOptions, Capabilities
from gateway.kserve.codec import INPUT_NAME, decode_bytes_tensor, encode_bytes_tensor
from hemascope.errors import HemascopeError, InvalidArgument, echo, error_class
from hemascope.imaging.inputs import ImageInput

MODEL_NAME = "hemascope"
MAX_BATCH = 64
OUTPUTS: dict[str, str] = {
    "LABEL": "BYTES",
    "PROBABILITIES": "FP32",
    "MALIGNANT_PROBABILITY": "FP32",
    "REFER": "BOOL",
    "CONTENT_HASH": "BYTES",
}


def options(request: service_pb2.ModelInferRequest) -> AnalyzeOptions:
    """The request's parameters as analysis options (classification only)."""
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
    if len(models) > MAX_MODELS:
        raise InvalidArgument(f"parameter 'models' names {len(models)} models; the limit is {MAX_MODELS}")
    for index, model in enumerate(models):
        checked_name(model, f"parameters.models[{index}]")
    return AnalyzeOptions(models=models, malignant_threshold=threshold)


def options_view(request: service_pb2.ModelInferRequest) -> dict[str, Any]:
    """What the audit trail records of a request's options (never the images)."""
    view: dict[str, Any] = {"model_name": request.model_name[:128]}
    for name, value in request.parameters.items():
        if name == "models" and value.WhichOneof("parameter_choice") == "string_param":
            view["models"] = [m.strip() for m in value.string_param.split(",") if m.strip()]
        elif name == "malignant_threshold" and value.WhichOneof("parameter_choice") == "double_param":
            view["malignant_threshold"] = value.double_param
    return view


def images(request: service_pb2.ModelInferRequest) -> list[ImageInput]:
    """The encoded images of the ``IMAGE`` input; INVALID_ARGUMENT for anything else."""
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = [echo(tensor.name) for tensor in request.inputs[:4]]
        raise InvalidArgument(
            f"expected one input named {INPUT_NAME!r}, got {', '.join(names)}", field="inputs"
        )
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidArgument(f"{INPUT_NAME} must be BYTES, got {echo(tensor.datatype)}", field=INPUT_NAME)
    if len(tensor.shape) != 1 or tensor.shape[0] < 1:
        raise InvalidArgument(f"{INPUT_NAME} must have shape [N] with N >= 1, got {list(tensor.shape)[:4]}")
    count = int(tensor.shape[0])
    if count > MAX_BATCH:
        raise InvalidArgument(
            f"{count} images in one request; the limit is {MAX_BATCH}", reason="BATCH_TOO_LARGE"
        )
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidArgument("expected one raw_input_contents entry (one input)", field=INPUT_NAME)
        items = decode_bytes_tensor(request.raw_input_contents[0], count)
    else:
        items = list(tensor.contents.bytes_contents)
        if len(items) != count:
            raise InvalidArgument(f"IMAGE: shape says {count} elements, contents hold {len(items)}")
    return [ImageInput(data) for data in items]


def wanted_outputs(request: service_pb2.ModelInferRequest) -> list[str]:
    wanted = [output.name for output in request.outputs] or list(OUTPUTS)
    unknown = [echo(name) for name in wanted if name not in OUTPUTS]
    if unknown:
        raise InvalidArgument(f"unknown output(s) {', '.join(unknown[:4])}; this model has {list(OUTPUTS)}")
    return wanted


def classification_error(report: AnalysisReport, index: int) -> HemascopeError:
    """The error of an image whose classification failed: the failed part's code, reason and message."""
    failed = [part for part in report.parts if not part.ok]
    part = next((p for p in failed if p.part == "classification"), failed[0] if failed else None)
    if part is None:
        return HemascopeError(f"image {index}: no classification in the report", reason="NO_RESULT")
    return error_class(part.code)(f"image {index}: {part.part} failed: {part.message}", reason=part.reason)


def probabilities(report: AnalysisReport, classes: Sequence[str]) -> list[float]:
    assert report.classification is not None
    predictions = report.classification.predictions
    sums = dict.fromkeys(classes, 0.0)
    for prediction in predictions:
        for entry in prediction.probabilities:
            if entry.class_name in sums:
                sums[entry.class_name] += entry.probability
    return [sums[name] / max(1, len(predictions)) for name in classes]


def response(
    request: service_pb2.ModelInferRequest,
    caps: Capabilities,
    reports: list[AnalysisReport],
    wanted: list[str],
) -> service_pb2.ModelInferResponse:
    n = len(reports)
    columns: dict[str, tuple[list[int], bytes]] = {}
    consensus = [report.classification.consensus for report in reports if report.classification is not None]
    if "LABEL" in wanted:
        columns["LABEL"] = ([n], encode_bytes_tensor([c.label.encode() for c in consensus]))
    if "PROBABILITIES" in wanted:
        rows = [probabilities(report, caps.classes) for report in reports]
        columns["PROBABILITIES"] = ([n, len(caps.classes)], np.asarray(rows, dtype="<f4").tobytes())
    if "MALIGNANT_PROBABILITY" in wanted:
        values = [c.malignant_probability for c in consensus]
        columns["MALIGNANT_PROBABILITY"] = ([n], np.asarray(values, dtype="<f4").tobytes())
    if "REFER" in wanted:
        columns["REFER"] = ([n], np.asarray([c.refer for c in consensus], dtype=np.bool_).tobytes())
    if "CONTENT_HASH" in wanted:
        hashes = [report.content_hash.encode() for report in reports]
        columns["CONTENT_HASH"] = ([n], encode_bytes_tensor(hashes))
    made = service_pb2.ModelInferResponse(
        model_name=MODEL_NAME, model_version=caps.bundle_version, id=request.id
    )
    made.parameters["classes"].string_param = ",".join(caps.classes)
    for name in wanted:
        shape, raw = columns[name]
        made.outputs.add(name=name, datatype=OUTPUTS[name], shape=shape)
        made.raw_output_contents.append(raw)
    return made
