"""Protobuf <-> domain types for the detector service."""

from __future__ import annotations

from collections.abc import Sequence

from hemascope.errors import HemascopeError
from hemascope.imaging.inputs import ImageInput
from hemascope.interceptors import error_detail
from hemascope.v1 import common_pb2, detector_pb2
from services.detector.core import DetectOptions, DetectResult, Thresholds
from services.detector.runtime import Metrics, ModelInfo
from services.detector.settings import DetectorSettings


def image_from_proto(image: common_pb2.Image) -> ImageInput:
    return ImageInput(data=image.data, media_type=image.media_type, image_id=image.image_id)


def options_from_proto(options: detector_pb2.DetectOptions) -> DetectOptions:
    return DetectOptions(
        confidence=float(options.confidence),
        iou=float(options.iou),
        max_detections=int(options.max_detections),
    )


def detect_response(result: DetectResult, info: ModelInfo) -> detector_pb2.DetectResponse:
    boxes = [
        detector_pb2.Box(
            x1=box.x1,
            y1=box.y1,
            x2=box.x2,
            y2=box.y2,
            class_name=box.class_name,
            class_id=box.class_id,
            score=box.score,
        )
        for box in result.boxes
    ]
    return detector_pb2.DetectResponse(
        boxes=boxes,
        width=result.width,
        height=result.height,
        content_hash=result.content_hash,
        image_id=result.image_id,
        model_version=info.version,
    )


def batch_response(
    images: Sequence[ImageInput], outcomes: Sequence[DetectResult | HemascopeError], info: ModelInfo
) -> detector_pb2.DetectBatchResponse:
    results = []
    for image, outcome in zip(images, outcomes, strict=True):
        if isinstance(outcome, HemascopeError):
            error = error_detail(outcome)
            results.append(detector_pb2.DetectBatchResult(image_id=image.image_id, error=error))
        else:
            response = detect_response(outcome, info)
            results.append(detector_pb2.DetectBatchResult(image_id=image.image_id, result=response))
    return detector_pb2.DetectBatchResponse(results=results)


def _metrics(metrics: Metrics) -> detector_pb2.DetectionMetrics:
    return detector_pb2.DetectionMetrics(
        precision=metrics.precision,
        recall=metrics.recall,
        map50=metrics.map50,
        map50_95=metrics.map50_95,
        images=metrics.images,
        instances=metrics.instances,
    )


def model_info_response(
    info: ModelInfo, defaults: Thresholds, settings: DetectorSettings
) -> detector_pb2.GetModelInfoResponse:
    response = detector_pb2.GetModelInfoResponse(
        model_name=info.name,
        model_version=info.version,
        model_sha256=info.sha256,
        classes=list(info.classes),
        input_size=info.input_size,
        execution_providers=list(info.providers),
        default_options=detector_pb2.DetectOptions(
            confidence=defaults.confidence, iou=defaults.iou, max_detections=defaults.max_detections
        ),
        max_detections_limit=settings.max_detections_limit,
        max_batch_items=settings.max_batch_items,
        max_batch_bytes=settings.max_batch_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )
    if info.card is not None:
        response.metrics.CopyFrom(_metrics(info.card.overall))
        response.metrics_split = info.card.split
        response.class_metrics.extend(
            detector_pb2.ClassMetrics(class_name=name, metrics=_metrics(metrics))
            for name, metrics in info.card.per_class.items()
        )
    return response
