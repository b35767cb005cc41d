"""Detections in the batch pipeline: the detector service's core, in the analysing actor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hemascope.errors import HemascopeError
from hemascope.imaging.inputs import ImageInput
from services.detector.core import DetectorCore, DetectResult
from services.detector.settings import DetectorSettings

if TYPE_CHECKING:
    from batch.worker import WorkerConfig


def detector_settings(config: WorkerConfig) -> DetectorSettings:
    overrides: dict[str, Any] = {"model": Path(config.detector_model)} if config.detector_model else {}
    return DetectorSettings(
        intra_op_threads=config.threads, use_gpu=config.use_gpu, metrics_port=None, **overrides
    )


def load_detector(config: WorkerConfig) -> DetectorCore:
    core = DetectorCore(detector_settings(config))
    core.load()
    return core


def detections(
    core: DetectorCore, images: Sequence[ImageInput | None]
) -> list[list[dict[str, Any]] | HemascopeError]:
    """The boxes of each image (original-image pixels, the service's default thresholds), or its error."""
    found: list[list[dict[str, Any]] | HemascopeError] = []
    step = core.settings.max_batch_items
    given = [image for image in images if image is not None]
    for start in range(0, len(given), step):
        for outcome in core.detect_many(given[start : start + step]):
            found.append(outcome if isinstance(outcome, HemascopeError) else _boxes(outcome))
    return found


def _boxes(result: DetectResult) -> list[dict[str, Any]]:
    return [
        {"class_name": b.class_name, "score": b.score, "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
        for b in result.boxes
    ]
