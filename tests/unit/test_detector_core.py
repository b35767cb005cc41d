"""The detector core with the real BCCD ONNX model: thresholds, coordinates, batches, model loading."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from hemascope.errors import ConfigurationError, HemascopeError, InvalidArgument
from hemascope.imaging.boxes import Box
from hemascope.imaging.decode import decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.inputs import ImageInput
from services.detector.core import (
    DetectOptions,
    DetectorCore,
    DetectResult,
    Thresholds,
    resolve_options,
)
from services.detector.settings import DEFAULT_MODEL, DetectorSettings
from tests.conftest import encode


def bccd_val_images(data_dir: Path, count: int) -> list[Path]:
    ids = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()
    return [data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg" for image_id in ids[:count]]


@pytest.fixture(scope="module")
def core() -> Iterator[DetectorCore]:
    detector = DetectorCore(
        DetectorSettings(max_batch_items=4, max_batch_bytes=2 * 1024 * 1024, max_detections_limit=500)
    )
    detector.load()
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def val_images(data_dir: Path) -> list[Path]:
    return bccd_val_images(data_dir, 4)


def assert_boxes_inside(result: DetectResult) -> None:
    for box in result.boxes:
        assert 0 <= box.x1 < box.x2 <= result.width and 0 <= box.y1 < box.y2 <= result.height, box


def test_finds_a_wbc_in_each_val_image(core: DetectorCore, val_images: list[Path]) -> None:
    for path in val_images:
        data = path.read_bytes()
        result = core.detect(ImageInput(data, image_id=path.stem))
        assert (result.width, result.height, result.image_id) == (640, 480, path.stem)
        assert result.content_hash == content_hash(decode_image(data).pixels)
        names = [box.class_name for box in result.boxes]
        assert "WBC" in names and "RBC" in names, (path.name, names)
        assert_boxes_inside(result)
        scores = [box.score for box in result.boxes]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.25
        assert all(core.info.classes[box.class_id] == box.class_name for box in result.boxes)


def test_thresholds_change_the_results(core: DetectorCore, val_images: list[Path]) -> None:
    image = ImageInput(val_images[0].read_bytes())
    default = core.detect(image)
    strict = core.detect(image, DetectOptions(confidence=0.8))
    loose = core.detect(image, DetectOptions(confidence=0.05))
    one = core.detect(image, DetectOptions(max_detections=1))
    assert len(loose.boxes) > len(default.boxes) > len(strict.boxes)
    assert all(box.score > 0.8 for box in strict.boxes)
    assert one.boxes == default.boxes[:1]
    tight_nms = core.detect(image, DetectOptions(confidence=0.05, iou=0.1))
    assert len(tight_nms.boxes) < len(loose.boxes)


def test_boxes_are_in_original_pixels(core: DetectorCore, val_images: list[Path]) -> None:
    """The same smear at twice the size gives the same boxes at twice the coordinates."""
    pixels = decode_image(val_images[1].read_bytes()).pixels
    large = np.asarray(Image.fromarray(pixels).resize((1280, 960), Image.Resampling.BILINEAR))
    small = core.detect(ImageInput(encode(pixels, "PNG")))
    big = core.detect(ImageInput(encode(large, "PNG")))
    assert (big.width, big.height) == (1280, 960)
    assert_boxes_inside(big)

    def wbc(result: DetectResult) -> Box:
        return next(box for box in result.boxes if box.class_name == "WBC")

    a, b = wbc(small), wbc(big)
    assert [b.x1, b.y1, b.x2, b.y2] == pytest.approx([2 * a.x1, 2 * a.y1, 2 * a.x2, 2 * a.y2], abs=8)


def test_non_square_portrait_image(core: DetectorCore, val_images: list[Path]) -> None:
    pixels = decode_image(val_images[2].read_bytes()).pixels
    portrait = np.ascontiguousarray(np.rot90(pixels))  # 480 x 640: padded left and right
    result = core.detect(ImageInput(encode(portrait, "PNG")))
    assert (result.width, result.height) == (480, 640)
    assert any(box.class_name == "WBC" for box in result.boxes)
    assert_boxes_inside(result)


def test_resolve_options_defaults() -> None:
    assert resolve_options(DetectOptions(), 1000) == Thresholds(0.25, 0.7, 300)
    assert resolve_options(DetectOptions(1.0, 1.0, 1000), 1000) == Thresholds(1.0, 1.0, 1000)
    assert resolve_options(DetectOptions(), 50).max_detections == 50


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (DetectOptions(confidence=-0.01), "options.confidence"),
        (DetectOptions(confidence=1.5), "options.confidence"),
        (DetectOptions(confidence=math.nan), "options.confidence"),
        (DetectOptions(iou=-0.5), "options.iou"),
        (DetectOptions(iou=1.01), "options.iou"),
        (DetectOptions(iou=math.inf), "options.iou"),
        (DetectOptions(max_detections=501), "options.max_detections"),
        (DetectOptions(max_detections=-1), "options.max_detections"),
    ],
)
def test_bad_options_are_refused_before_decoding(
    core: DetectorCore, options: DetectOptions, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        core.detect(ImageInput(b"not even an image"), options)
    assert (info.value.reason, info.value.field) == ("BAD_OPTION", field)
    if field == "options.max_detections":
        assert "[1, 500]" in info.value.message


def test_batch_keeps_order_and_per_item_errors(core: DetectorCore, val_images: list[Path]) -> None:
    good = val_images[0].read_bytes()
    images = [ImageInput(good, image_id="a"), ImageInput(b"", image_id="b"), ImageInput(good[:5000], "", "c")]
    outcomes = core.detect_many(images, DetectOptions(max_detections=5))
    assert isinstance(outcomes[0], DetectResult) and len(outcomes[0].boxes) == 5
    assert outcomes[0].image_id == "a"
    assert isinstance(outcomes[1], HemascopeError) and outcomes[1].reason == "EMPTY_IMAGE"
    assert isinstance(outcomes[2], HemascopeError) and outcomes[2].reason == "CORRUPT_IMAGE"
    single = core.detect(ImageInput(good), DetectOptions(max_detections=5))
    assert outcomes[0].boxes == single.boxes  # batched and alone: the same numbers


def test_batch_limits(core: DetectorCore, val_images: list[Path]) -> None:
    data = val_images[0].read_bytes()
    with pytest.raises(InvalidArgument, match="limit is 4") as info:
        core.detect_many([ImageInput(data)] * 5)
    assert info.value.reason == "BATCH_TOO_LARGE"
    with pytest.raises(InvalidArgument, match="bytes"):
        core.detect_many([ImageInput(data + b"\0" * (1024 * 1024))] * 2)


def test_in_flight_gauge_returns_to_zero(core: DetectorCore, val_images: list[Path]) -> None:
    core.detect(ImageInput(val_images[0].read_bytes()))
    with pytest.raises(HemascopeError):
        core.detect(ImageInput(b""))
    assert REGISTRY.get_sample_value("hemascope_detector_in_flight") == 0


def test_model_info(core: DetectorCore) -> None:
    info = core.info
    assert (info.name, info.classes, info.input_size) == ("detector-bccd", ("WBC", "RBC", "Platelets"), 640)
    assert len(info.sha256) == 64 and info.sha256.startswith(info.version) and len(info.version) == 12
    assert info.providers[-1] == "CPUExecutionProvider"
    assert info.card is not None and info.card.split == "val"
    assert info.card.overall.map50 == pytest.approx(0.92226)
    assert list(info.card.per_class) == ["WBC", "RBC", "Platelets"]


def test_model_without_metrics_json_loads_without_card(tmp_path: Path) -> None:
    (tmp_path / "my-detector").mkdir()
    model = tmp_path / "my-detector" / "detector.onnx"
    model.symlink_to(DEFAULT_MODEL)
    detector = DetectorCore(DetectorSettings(model=model))
    detector.load()
    try:
        assert detector.info.card is None and detector.info.name == "my-detector"
    finally:
        detector.close()


@pytest.mark.parametrize(
    "content", [None, b"", b"this is not an onnx model"], ids=["missing", "empty", "junk"]
)
def test_unusable_model_is_a_configuration_error(tmp_path: Path, content: bytes | None) -> None:
    model = tmp_path / "detector.onnx"
    if content is not None:
        model.write_bytes(content)
    with pytest.raises(ConfigurationError, match=r"detector\.onnx"):
        DetectorCore(DetectorSettings(model=model)).load()


def test_calls_before_load_are_unavailable() -> None:
    detector = DetectorCore(DetectorSettings())
    with pytest.raises(HemascopeError) as info:
        detector.detect(ImageInput(b"x"))
    assert info.value.reason == "NOT_READY"
