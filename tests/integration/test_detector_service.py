"""The detector service over real gRPC (port 0) on real BCCD val images, its metrics, and its CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from hemascope.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from services.detector.server import SERVICE_NAME, create_server
from services.detector.settings import DetectorSettings
from tests.grpc_helpers import error_reason, rpc_error

HEMASCOPE = Path(sys.executable).with_name("hemascope")
COMMAND_TIMEOUT = 120.0
Stub = detector_pb2_grpc.DetectorServiceStub


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, int]]:
    """(gRPC port, metrics port) of one detector service for this module."""
    settings = DetectorSettings(
        port=0,
        metrics_port=0,
        max_message_bytes=2 * 1024 * 1024,
        max_image_bytes=1024 * 1024,
        max_batch_items=6,
        max_batch_bytes=1536 * 1024,
        log_json=False,
    )
    server, port = create_server(settings)
    server.wait_ready(120)
    assert server.metrics_port
    yield port, server.metrics_port
    server.stop(1)


@pytest.fixture
def stub(served: tuple[int, int], channel_to: Callable[[int], grpc.Channel]) -> Stub:
    return Stub(channel_to(served[0]))


@pytest.fixture(scope="module")
def val_images(data_dir: Path) -> list[Path]:
    """The first six BCCD val images (BloodImage_00xxx, 640 x 480, each with one WBC)."""
    ids = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[:6]
    return [data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]


def detect(stub: Stub, data: bytes, **options: float) -> detector_pb2.DetectResponse:
    request = detector_pb2.DetectRequest(
        image=common_pb2.Image(data=data), options=detector_pb2.DetectOptions(**options)
    )
    return stub.Detect(request, timeout=60)


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def test_detects_wbc_in_val_images(stub: Stub, val_images: list[Path]) -> None:
    for path in val_images:
        request = detector_pb2.DetectRequest(
            image=common_pb2.Image(data=path.read_bytes(), image_id=path.stem)
        )
        response = stub.Detect(request, timeout=60)
        assert path.stem.startswith("BloodImage_00")
        assert (response.width, response.height, response.image_id) == (640, 480, path.stem)
        assert len(response.content_hash) == 64 and len(response.model_version) == 12
        names = [box.class_name for box in response.boxes]
        assert "WBC" in names, (path.name, names)
        for box in response.boxes:
            assert 0 <= box.x1 < box.x2 <= 640 and 0 <= box.y1 < box.y2 <= 480
            assert 0.25 < box.score <= 1 and box.class_name == ("WBC", "RBC", "Platelets")[box.class_id]


def test_thresholds_change_results(stub: Stub, val_images: list[Path]) -> None:
    data = val_images[0].read_bytes()
    default = detect(stub, data)
    strict = detect(stub, data, confidence=0.8)
    one = detect(stub, data, max_detections=1)
    assert len(default.boxes) > len(strict.boxes) >= 1
    assert min(box.score for box in strict.boxes) > 0.8
    assert len(one.boxes) == 1 and one.boxes[0] == default.boxes[0]


BAD_OPTIONS: list[tuple[str, dict[str, float], str]] = [
    ("confidence above 1", {"confidence": 1.5}, "options.confidence"),
    ("negative confidence", {"confidence": -0.1}, "options.confidence"),
    ("nan confidence", {"confidence": float("nan")}, "options.confidence"),
    ("iou above 1", {"iou": 1.2}, "options.iou"),
    ("negative iou", {"iou": -0.3}, "options.iou"),
    ("max detections above limit", {"max_detections": 1001}, "options.max_detections"),
]


@pytest.mark.parametrize(("name", "options", "field"), BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_bad_options_are_invalid_argument(
    stub: Stub, val_images: list[Path], name: str, options: dict[str, float], field: str
) -> None:
    error = rpc_error(lambda: detect(stub, val_images[0].read_bytes(), **options))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "BAD_OPTION" and field in str(error.details())
    batch = detector_pb2.DetectBatchRequest(
        images=[common_pb2.Image(data=val_images[0].read_bytes())],
        options=detector_pb2.DetectOptions(**options),
    )
    error = rpc_error(lambda: stub.DetectBatch(batch, timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BAD_OPTION"


BAD_IMAGES: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("empty", lambda good: b"", "EMPTY_IMAGE"),
    ("truncated jpeg", lambda good: good[: len(good) // 2], "CORRUPT_IMAGE"),
    ("random bytes", lambda good: np.random.default_rng(3).bytes(5000), "UNSUPPORTED_FORMAT"),
    ("png claiming 20000x20000", lambda good: png_claiming(20000, 20000), "TOO_MANY_PIXELS"),
    ("over max_image_bytes", lambda good: good + b"\0" * (1024 * 1024), "IMAGE_TOO_LARGE"),
]


@pytest.mark.parametrize(("name", "make", "reason"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_image_gets_clear_status_and_server_keeps_serving(
    stub: Stub, val_images: list[Path], name: str, make: Callable[[bytes], bytes], reason: str
) -> None:
    good = val_images[0].read_bytes()
    error = rpc_error(lambda: detect(stub, make(good)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error_reason(error) == reason
    assert error.details() and "Traceback" not in str(error.details())
    assert len(detect(stub, good).boxes) > 0


def test_batch_reports_per_item_errors(stub: Stub, val_images: list[Path]) -> None:
    good = val_images[1].read_bytes()
    images = [
        common_pb2.Image(data=good, image_id="a"),
        common_pb2.Image(data=b"", image_id="b"),
        common_pb2.Image(data=good[: len(good) // 2], image_id="c"),
        common_pb2.Image(data=val_images[2].read_bytes(), image_id="d"),
    ]
    options = detector_pb2.DetectOptions(max_detections=3)
    response = stub.DetectBatch(detector_pb2.DetectBatchRequest(images=images, options=options), timeout=60)
    assert [r.image_id for r in response.results] == ["a", "b", "c", "d"]
    assert [r.WhichOneof("outcome") for r in response.results] == ["result", "error", "error", "result"]
    assert response.results[1].error.reason == "EMPTY_IMAGE"
    assert response.results[2].error.reason == "CORRUPT_IMAGE"
    assert response.results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(response.results[0].result.boxes) == 3 and response.results[3].result.width == 640
    alone = detect(stub, good, max_detections=3)
    assert list(response.results[0].result.boxes) == list(alone.boxes)


def test_batch_limits(stub: Stub, val_images: list[Path]) -> None:
    data = val_images[0].read_bytes()
    too_many = detector_pb2.DetectBatchRequest(images=[common_pb2.Image(data=data)] * 7)
    error = rpc_error(lambda: stub.DetectBatch(too_many, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BATCH_TOO_LARGE"
    assert "limit is 6" in str(error.details())


def test_model_info(stub: Stub) -> None:
    info = stub.GetModelInfo(detector_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.model_name, list(info.classes), info.input_size) == (
        "detector-bccd",
        ["WBC", "RBC", "Platelets"],
        640,
    )
    assert len(info.model_sha256) == 64 and info.model_sha256.startswith(info.model_version)
    assert info.execution_providers[-1] == "CPUExecutionProvider"
    assert info.metrics_split == "val"
    assert info.metrics.map50 == pytest.approx(0.92226) and info.metrics.map50_95 == pytest.approx(0.63377)
    assert info.metrics.precision == pytest.approx(0.83561) and info.metrics.recall == pytest.approx(0.91272)
    per_class = {entry.class_name: entry.metrics for entry in info.class_metrics}
    assert list(per_class) == ["WBC", "RBC", "Platelets"] and per_class["WBC"].map50 == pytest.approx(0.99261)
    assert info.default_options.confidence == pytest.approx(0.25)
    assert info.default_options.iou == pytest.approx(0.7) and info.default_options.max_detections == 300
    assert info.max_detections_limit == 1000 and info.max_batch_items == 6
    assert info.max_image_bytes == 1024 * 1024


def test_health_is_serving(served: tuple[int, int], channel_to: Callable[[int], grpc.Channel]) -> None:
    health = health_pb2_grpc.HealthStub(channel_to(served[0]))
    for service in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert SERVICE_NAME == "hemascope.v1.DetectorService"


def test_metrics_expose_the_autoscaling_signals(
    stub: Stub, served: tuple[int, int], val_images: list[Path]
) -> None:
    detect(stub, val_images[0].read_bytes())
    with urllib.request.urlopen(f"http://127.0.0.1:{served[1]}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "hemascope_detector_in_flight 0.0" in text
    assert 'hemascope_queue_depth{queue="detector"}' in text
    assert 'hemascope_detector_detections_total{class_name="WBC"}' in text
    assert 'hemascope_batch_size_count{queue="detector"}' in text


# CLI ------------------------------------------------------------------------------------------------------


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEMASCOPE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_cli_detect_in_process_and_through_the_service(
    served: tuple[int, int], val_images: list[Path]
) -> None:
    images = [str(path) for path in val_images[:2]]
    local = run_cli("detect", "--json", "--max-det", "50", *images)
    remote = run_cli("detect", "--json", "--max-det", "50", "--address", f"127.0.0.1:{served[0]}", *images)
    for result in (local, remote):
        assert result.returncode == 0, result.stderr
        lines = json_lines(result.stdout)
        assert [line["image"] for line in lines] == images
        for line in lines:
            counts, boxes = line["counts"], line["boxes"]
            assert isinstance(counts, dict) and counts["WBC"] >= 1
            assert isinstance(boxes, list) and 0 < len(boxes) <= 50
            assert (line["width"], line["height"]) == (640, 480)
    assert [line["boxes"] for line in json_lines(local.stdout)] == [
        line["boxes"] for line in json_lines(remote.stdout)
    ]


def test_cli_draw_writes_png(served: tuple[int, int], val_images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "drawn" / "boxes.png"
    result = run_cli("detect", "--address", f"127.0.0.1:{served[0]}", "--draw", str(out), str(val_images[0]))
    assert result.returncode == 0, result.stderr
    assert "WBC" in result.stdout and str(out) in result.stdout
    with Image.open(out) as drawn:
        assert (drawn.format, drawn.width, drawn.mode) == ("PNG", 640, "RGB")
        assert drawn.height > 480  # the image, then the legend strip below it
        original = np.asarray(Image.open(val_images[0]).convert("RGB"))
        assert not np.array_equal(np.asarray(drawn)[:480], original)  # the boxes are on it
    several = run_cli("detect", "--draw", str(out), "--conf", "0.5", *map(str, val_images[:2]))
    assert several.returncode == 0, several.stderr
    for path in val_images[:2]:
        with Image.open(out.with_name(f"boxes-{path.stem}.png")) as drawn:
            assert drawn.width == 640 and drawn.height > 480


def test_cli_detect_reports_bad_files(tmp_path: Path, val_images: list[Path]) -> None:
    junk = tmp_path / "notes.jpg"
    junk.write_bytes(b"this is a text file\n" * 20)
    result = run_cli("detect", "--json", str(junk), str(val_images[0]))
    assert result.returncode == 1
    lines = json_lines(result.stdout)
    assert isinstance(lines[0]["error"], dict) and lines[0]["error"]["code"] == "INVALID_ARGUMENT"
    assert lines[1]["image"] == str(val_images[0])


def test_serve_detector_with_a_missing_model_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "detector.onnx"
    result = run_cli("serve", "detector", "--port", "0", "--metrics-port", "0", "--model", str(missing))
    assert result.returncode == 2, result.stderr
    assert "detector service cannot start" in result.stderr and str(missing) in result.stderr
