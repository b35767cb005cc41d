"""The detector service's core: image bytes -> cell boxes in the original image's pixels. No gRPC here.

decode (shared kernel) -> letterbox -> micro-batcher (the letterboxed tensors of concurrent requests are
stacked into one session run) -> NMS per image with that request's thresholds.

Autoscaling signals (Prometheus): ``hemascope_detector_in_flight`` (Detect/DetectBatch calls being handled)
and ``hemascope_queue_depth{queue="detector"}`` (letterboxed images waiting for the model).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace

from hemascope.batching import MicroBatcher
from hemascope.errors import DeadlineExceeded, HemascopeError, InvalidArgument, Unavailable
from hemascope.imaging.boxes import Box
from hemascope.imaging.decode import DecodedImage, ImageLimits, decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.inputs import ImageInput, check_batch
from hemascope.logs import get_logger
from hemascope.tracing import set_attributes, step
from services.detector.metrics import DETECTIONS, IN_FLIGHT, QUEUE_NAME
from services.detector.postprocess import Detection, postprocess
from services.detector.preprocess import Letterbox, letterbox
from services.detector.runtime import ModelInfo, OnnxDetector, describe
from services.detector.settings import DetectorSettings

log = get_logger(__name__)

DEFAULT_CONFIDENCE = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DETECTIONS = 300

Tensor = NDArray[np.float32]


@dataclass(frozen=True)
class DetectOptions:
    """Thresholds as a caller gives them; 0 means the default."""

    confidence: float = 0.0
    iou: float = 0.0
    max_detections: int = 0


@dataclass(frozen=True)
class Thresholds:
    """Validated thresholds with the defaults filled in."""

    confidence: float
    iou: float
    max_detections: int


@dataclass(frozen=True)
class DetectResult:
    boxes: list[Box]
    width: int
    height: int
    content_hash: str
    image_id: str = ""


@dataclass
class _Prepared:
    """An image decoded and letterboxed; ``future`` is its raw head output once queued."""

    image: ImageInput
    decoded: DecodedImage
    placement: Letterbox
    content_hash: str
    future: Future[Tensor] | None = None


def resolve_options(options: DetectOptions, max_detections_limit: int) -> Thresholds:
    """Fills in the defaults and checks the ranges; InvalidArgument (reason BAD_OPTION) names the field."""
    confidence, iou, max_det = options.confidence, options.iou, options.max_detections
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        default = DEFAULT_CONFIDENCE
        raise _bad_option("confidence", f"must be in [0, 1] (0 = default {default}); got {confidence}")
    if not (math.isfinite(iou) and 0.0 <= iou <= 1.0):
        raise _bad_option("iou", f"must be in (0, 1] (0 = default {DEFAULT_IOU}); got {iou}")
    if max_det < 0 or max_det > max_detections_limit:
        raise _bad_option(
            "max_detections",
            f"must be in [1, {max_detections_limit}] (0 = default "
            f"{min(DEFAULT_MAX_DETECTIONS, max_detections_limit)}); got {max_det}",
        )
    return Thresholds(
        confidence=confidence or DEFAULT_CONFIDENCE,
        iou=iou or DEFAULT_IOU,
        max_detections=max_det or min(DEFAULT_MAX_DETECTIONS, max_detections_limit),
    )


def _bad_option(name: str, text: str) -> InvalidArgument:
    return InvalidArgument(f"options.{name} {text}", reason="BAD_OPTION", field=f"options.{name}")


class DetectorCore:
    """Loads the detector's ONNX export and finds cells in images with it."""

    def __init__(self, settings: DetectorSettings, tracer: trace.Tracer | None = None) -> None:
        self.settings = settings
        self._tracer = tracer or trace.NoOpTracer()
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self._info: ModelInfo | None = None
        self._model: OnnxDetector | None = None
        self._batcher: MicroBatcher[Tensor, Tensor] | None = None

    # lifecycle -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Opens the session (ConfigurationError if the model is missing or wrong), warms it up, starts the
        batcher."""
        started = time.perf_counter()
        path = self.settings.model
        model = OnnxDetector(
            path,
            intra_op_threads=self.settings.intra_op_threads,
            use_gpu=self.settings.use_gpu,
            allow_spinning=self.settings.allow_spinning,
        )
        model.warm_up()
        self._model = model
        self._batcher = MicroBatcher(
            self._run_batch,
            name=QUEUE_NAME,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000,
            max_queue=self.settings.max_queue,
        )
        for class_name in model.classes:
            DETECTIONS.labels(class_name)  # every class shows on /metrics from the start, at 0
        info = self._info = describe(model, path)
        log.info(
            "detector_loaded",
            model=info.name,
            version=info.version,
            classes=list(info.classes),
            providers=list(info.providers),
            seconds=round(time.perf_counter() - started, 2),
        )

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise Unavailable("the detector is still loading; retry shortly", reason="NOT_READY")
        return self._info

    # detection -------------------------------------------------------------------------------------------
    def thresholds(self, options: DetectOptions) -> Thresholds:
        return resolve_options(options, self.settings.max_detections_limit)

    def detect(
        self, image: ImageInput, options: DetectOptions = DetectOptions(), *, timeout: float | None = None
    ) -> DetectResult:
        """Detects the cells of one image; ``timeout`` is the caller's remaining deadline in seconds."""
        with IN_FLIGHT.track_inprogress(), step(self._tracer, "detector.detect") as span:
            thresholds = self.thresholds(options)
            batcher = self._batcher_or_raise()
            set_attributes(span, {"model": self.info.name, "model_version": self.info.version})
            prepared, tensor = self._prepare(image)
            raw = batcher.submit(tensor, timeout)
            result = self._result(prepared, raw, thresholds)
            set_attributes(span, {"boxes": len(result.boxes)})
            return result

    def detect_many(
        self,
        images: Sequence[ImageInput],
        options: DetectOptions = DetectOptions(),
        *,
        timeout: float | None = None,
    ) -> list[DetectResult | HemascopeError]:
        """Detects the cells of each image; each gets a result or its own error, in order."""
        with (
            IN_FLIGHT.track_inprogress(),
            step(self._tracer, "detector.detect_batch", items=len(images)),
        ):
            thresholds = self.thresholds(options)
            self.check_batch(images)
            deadline = None if timeout is None else time.monotonic() + timeout
            batcher = self._batcher_or_raise()
            outcomes: list[_Prepared | HemascopeError] = []
            for image in images:
                try:
                    prepared, tensor = self._prepare(image)
                    prepared.future = batcher.enqueue(tensor, _remaining(deadline))
                    outcomes.append(prepared)
                except HemascopeError as exc:
                    outcomes.append(exc)
            return [self._finish(outcome, thresholds, deadline) for outcome in outcomes]

    def check_batch(self, images: Sequence[ImageInput]) -> None:
        check_batch(images, self.settings.max_batch_items, self.settings.max_batch_bytes)

    # internals -------------------------------------------------------------------------------------------
    def _batcher_or_raise(self) -> MicroBatcher[Tensor, Tensor]:
        if self._batcher is None:
            raise Unavailable("the detector is still loading; retry shortly", reason="NOT_READY")
        return self._batcher

    def _prepare(self, image: ImageInput) -> tuple[_Prepared, Tensor]:
        decoded = decode_image(image.data, self.limits, image.media_type)
        tensor, placement = letterbox(decoded.pixels, self.info.input_size)
        return _Prepared(image, decoded, placement, content_hash(decoded.pixels)), tensor

    def _finish(
        self, outcome: _Prepared | HemascopeError, thresholds: Thresholds, deadline: float | None
    ) -> DetectResult | HemascopeError:
        if isinstance(outcome, HemascopeError):
            return outcome
        assert outcome.future is not None
        try:
            raw = outcome.future.result(timeout=_remaining(deadline))
        except TimeoutError:
            outcome.future.cancel()
            return DeadlineExceeded("deadline passed before this image was processed")
        except HemascopeError as exc:
            return exc
        return self._result(outcome, raw, thresholds)

    def _run_batch(self, items: Sequence[Tensor]) -> list[Tensor]:
        assert self._model is not None
        return list(self._model.run(np.stack(items)))

    def _result(self, prepared: _Prepared, raw: Tensor, thresholds: Thresholds) -> DetectResult:
        detections = postprocess(
            raw,
            prepared.placement,
            conf=thresholds.confidence,
            iou=thresholds.iou,
            max_det=thresholds.max_detections,
        )
        boxes = [self._box(d) for d in detections]
        return DetectResult(
            boxes=boxes,
            width=prepared.decoded.width,
            height=prepared.decoded.height,
            content_hash=prepared.content_hash,
            image_id=prepared.image.image_id,
        )

    def _box(self, detection: Detection) -> Box:
        name = self.info.classes[detection.class_id]
        DETECTIONS.labels(name).inc()
        return Box(
            detection.x1, detection.y1, detection.x2, detection.y2, detection.class_id, name, detection.score
        )


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
