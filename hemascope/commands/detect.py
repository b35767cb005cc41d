"""``hemascope detect``: cell boxes through a running detector service, or in-process; optionally drawn."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import grpc

from hemascope.commands.errors import check_reachable, print_image_error
from hemascope.errors import HemascopeError

if TYPE_CHECKING:
    from hemascope.imaging.boxes import Box
    from services.detector.core import DetectOptions


@dataclass(frozen=True)
class DetectLine:
    """What is printed for one image."""

    path: str
    width: int
    height: int
    model_version: str
    content_hash: str
    ms: float
    boxes: list[Box]


Detector = Callable[[str, bytes], DetectLine]


def _service_detector(
    address: str, options: DetectOptions, timeout: float
) -> tuple[Detector, Callable[[], None]]:
    from hemascope.imaging.boxes import Box
    from hemascope.v1 import common_pb2, detector_pb2, detector_pb2_grpc

    channel = grpc.insecure_channel(address)
    stub = detector_pb2_grpc.DetectorServiceStub(channel)
    proto_options = detector_pb2.DetectOptions(
        confidence=options.confidence, iou=options.iou, max_detections=options.max_detections
    )

    def run(path: str, data: bytes) -> DetectLine:
        start = time.perf_counter()
        request = detector_pb2.DetectRequest(image=common_pb2.Image(data=data), options=proto_options)
        response = stub.Detect(request, timeout=timeout)
        ms = (time.perf_counter() - start) * 1000
        boxes = [Box(b.x1, b.y1, b.x2, b.y2, b.class_id, b.class_name, b.score) for b in response.boxes]
        return DetectLine(
            path, response.width, response.height, response.model_version, response.content_hash, ms, boxes
        )

    return run, channel.close


def _local_detector(options: DetectOptions) -> tuple[Detector, Callable[[], None]]:
    from hemascope.imaging.inputs import ImageInput
    from services.detector.core import DetectorCore
    from services.detector.settings import DetectorSettings

    overrides: dict[str, Any] = {}  # every setting from HEMASCOPE_DETECTOR_* or its default
    core = DetectorCore(DetectorSettings(**overrides))
    core.load()

    def run(path: str, data: bytes) -> DetectLine:
        start = time.perf_counter()
        result = core.detect(ImageInput(data=data), options)
        ms = (time.perf_counter() - start) * 1000
        version = core.info.version
        return DetectLine(path, result.width, result.height, version, result.content_hash, ms, result.boxes)

    return run, core.close


def drawing_path(out: Path, image: str, many: bool) -> Path:
    """``out`` itself for one image; ``<out stem>-<image stem>.png`` beside it for several."""
    return out.with_name(f"{out.stem}-{Path(image).stem}.png") if many else out


def _draw(data: bytes, boxes: Sequence[Box], path: Path) -> Path:
    from hemascope.imaging.boxes import save_drawing
    from hemascope.imaging.decode import decode_image

    return save_drawing(decode_image(data).pixels, boxes, path)


def _record(line: DetectLine, drawing: Path | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "image": line.path,
        "width": line.width,
        "height": line.height,
        "model_version": line.model_version,
        "content_hash": line.content_hash,
        "ms": round(line.ms, 2),
        "counts": dict(Counter(box.class_name for box in line.boxes)),
        "boxes": [
            {
                "x1": round(box.x1, 2),
                "y1": round(box.y1, 2),
                "x2": round(box.x2, 2),
                "y2": round(box.y2, 2),
                "class_name": box.class_name,
                "class_id": box.class_id,
                "score": round(box.score, 4),
            }
            for box in line.boxes
        ],
    }
    if drawing is not None:
        record["drawing"] = str(drawing)
    return record


def _print(line: DetectLine, drawing: Path | None, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_record(line, drawing)))
        return
    counts = ", ".join(f"{name} {n}" for name, n in Counter(b.class_name for b in line.boxes).items())
    drawn = f"; drawn to {drawing}" if drawing else ""
    click.echo(
        f"{line.path}: {line.width}x{line.height}, {len(line.boxes)} boxes ({counts or 'none'}) "
        f"in {line.ms:.1f} ms, model {line.model_version}{drawn}"
    )
    for box in line.boxes:
        click.echo(
            f"  {box.class_name:<10} {box.score:.3f}  "
            f"[{box.x1:7.1f}, {box.y1:7.1f}, {box.x2:7.1f}, {box.y2:7.1f}]"
        )


def run_detect(
    paths: list[str],
    *,
    address: str | None,
    as_json: bool,
    draw: Path | None,
    confidence: float,
    iou: float,
    max_detections: int,
    timeout: float,
) -> int:
    """Detects the cells of each path and prints them (and draws them); returns the number of failures.

    ``confidence``, ``iou`` and ``max_detections`` of 0 take the detector's defaults.
    """
    from services.detector.core import DetectOptions

    options = DetectOptions(confidence=confidence, iou=iou, max_detections=max_detections)
    detector, close = _service_detector(address, options, timeout) if address else _local_detector(options)
    failures = 0
    try:
        for path in paths:
            try:
                data = Path(path).read_bytes()
                line = detector(path, data)
                drawing = _draw(data, line.boxes, drawing_path(draw, path, len(paths) > 1)) if draw else None
            except (OSError, grpc.RpcError, HemascopeError) as exc:
                check_reachable(exc, "detector", address)
                failures += 1
                print_image_error(path, exc, as_json)
                continue
            _print(line, drawing, as_json)
    finally:
        close()
    return failures
