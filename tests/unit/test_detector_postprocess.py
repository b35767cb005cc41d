"""Detector pre- and post-processing on hand-made inputs: letterbox geometry, NMS rules, mapping back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.detector.postprocess import Detection, nms, postprocess
from services.detector.preprocess import Letterbox, letterbox

PAD = np.float32(114) / np.float32(255)
IDENTITY = Letterbox(scale=1.0, pad_x=0.0, pad_y=0.0, width=640, height=640, size=640)


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _raw(rows: list[tuple[float, float, float, float, int, float]], nc: int = 3) -> np.ndarray:
    """Head output (4 + nc, anchors) from (cx, cy, w, h, class, score) rows; other classes score 0.01."""
    raw = np.full((4 + nc, len(rows)), 0.01, dtype=np.float32)
    for k, (cx, cy, w, h, cls, score) in enumerate(rows):
        raw[:4, k] = (cx, cy, w, h)
        raw[4 + cls, k] = score
    return raw


# ----------------------------------------------------------------------
# letterbox
# ----------------------------------------------------------------------


def test_letterbox_640x480_pads_top_and_bottom_without_resizing() -> None:
    pixels = _image(480, 640)
    tensor, box = letterbox(pixels)
    assert box == Letterbox(scale=1.0, pad_x=0.0, pad_y=80.0, width=640, height=480, size=640)
    assert tensor.shape == (3, 640, 640) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.all(tensor[:, :80] == PAD) and np.all(tensor[:, 560:] == PAD)
    expected = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    assert np.array_equal(tensor[:, 80:560], expected)  # RGB kept, no resampling at scale 1
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0


def test_letterbox_scales_small_image_up() -> None:
    pixels = _image(50, 100)
    tensor, box = letterbox(pixels)
    assert box.scale == pytest.approx(6.4) and (box.pad_x, box.pad_y) == (0.0, 160.0)
    assert (box.resized_width, box.resized_height) == (640, 320) and (box.width, box.height) == (100, 50)
    assert np.all(tensor[:, :160] == PAD) and np.all(tensor[:, 480:] == PAD)
    resized = cv2.resize(pixels, (640, 320), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(tensor[:, 160:480], resized.transpose(2, 0, 1).astype(np.float32) / np.float32(255))


def test_letterbox_scales_wide_image_down() -> None:
    pixels = np.full((300, 1000, 3), (200, 10, 90), dtype=np.uint8)
    tensor, box = letterbox(pixels)
    assert box.scale == pytest.approx(0.64) and (box.pad_x, box.pad_y) == (0.0, 224.0)
    assert (box.resized_width, box.resized_height) == (640, 192)
    assert np.all(tensor[:, :224] == PAD) and np.all(tensor[:, 416:] == PAD)
    inside = tensor[:, 224:416]
    for channel, value in enumerate((200, 10, 90)):  # channel order kept (RGB in, RGB out)
        assert np.all(inside[channel] == np.float32(value) / np.float32(255))


def test_letterbox_splits_odd_padding_like_ultralytics() -> None:
    # 500 x 371: r = 1.28, height round(474.88) = 475, 165 rows of padding: 82 on top, 83 below.
    tensor, box = letterbox(_image(371, 500))
    assert (box.resized_width, box.resized_height, box.pad_x, box.pad_y) == (640, 475, 0.0, 82.0)
    assert np.all(tensor[:, :82] == PAD) and np.all(tensor[:, 82 + 475 :] == PAD)
    assert not np.all(tensor[:, 82] == PAD) and not np.all(tensor[:, 82 + 474] == PAD)
    assert box.gain_y == pytest.approx(475 / 371) and box.gain_x == pytest.approx(1.28)


def test_letterbox_portrait_pads_left_and_right() -> None:
    tensor, box = letterbox(_image(641, 639))  # r = 640/641: width round(638.0) = 638, 1 column each side
    assert (box.resized_width, box.resized_height, box.pad_x, box.pad_y) == (638, 640, 1.0, 0.0)
    assert np.all(tensor[:, :, :1] == PAD) and np.all(tensor[:, :, 639:] == PAD)


def test_letterbox_keeps_thin_images_at_least_one_pixel() -> None:
    tensor, box = letterbox(_image(1, 3000))
    assert (box.resized_width, box.resized_height, box.pad_y) == (640, 1, 319.0)
    assert tensor.shape == (3, 640, 640)


BAD_ARRAYS = [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3))]


@pytest.mark.parametrize("bad", BAD_ARRAYS)
def test_letterbox_rejects_other_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        letterbox(bad)


# ----------------------------------------------------------------------
# NMS and postprocess
# ----------------------------------------------------------------------


def test_overlapping_boxes_of_one_class_are_suppressed() -> None:
    raw = _raw([(100, 100, 40, 40, 1, 0.8), (102, 101, 40, 40, 1, 0.9), (300, 300, 40, 40, 1, 0.7)])
    detections = postprocess(raw, IDENTITY)
    assert [d.class_id for d in detections] == [1, 1]
    assert [d.score for d in detections] == pytest.approx([0.9, 0.7])
    assert (detections[0].x1, detections[0].y1, detections[0].x2, detections[0].y2) == (82, 81, 122, 121)


def test_overlapping_boxes_of_different_classes_are_kept() -> None:
    raw = _raw([(100, 100, 40, 40, 0, 0.9), (100, 100, 40, 40, 2, 0.8), (101, 100, 40, 40, 2, 0.6)])
    detections = postprocess(raw, IDENTITY)
    assert [d.class_id for d in detections] == [0, 2]


def test_iou_threshold_is_exclusive() -> None:
    # IoU exactly 0.5: kept at iou=0.5 (suppression needs IoU > iou), suppressed at iou=0.49.
    raw = _raw([(5, 5, 10, 10, 0, 0.9), (5, 2.5, 10, 5, 0, 0.8)])
    assert len(postprocess(raw, IDENTITY, iou=0.5)) == 2
    assert len(postprocess(raw, IDENTITY, iou=0.49)) == 1


def test_confidence_threshold_is_exclusive_and_uses_the_best_class() -> None:
    raw = _raw([(50, 50, 10, 10, 0, 0.25), (150, 50, 10, 10, 1, 0.26), (250, 50, 10, 10, 2, 0.1)])
    raw[4:, 2] = (0.3, 0.6, 0.1)  # best class of the third box is class 1
    detections = postprocess(raw, IDENTITY)
    assert [(d.class_id, round(d.score, 2)) for d in detections] == [(1, 0.6), (1, 0.26)]
    assert postprocess(raw, IDENTITY, conf=0.7) == []


def test_max_det_keeps_the_best_scores_sorted() -> None:
    rng = np.random.default_rng(1)
    scores = rng.permutation(np.linspace(0.3, 0.95, 20))
    raw = _raw([(20 + 30 * k, 20, 10, 10, k % 3, float(s)) for k, s in enumerate(scores)])
    detections = postprocess(raw, IDENTITY, max_det=5)
    assert len(detections) == 5
    got = [d.score for d in detections]
    assert got == sorted(got, reverse=True)
    assert got == pytest.approx(sorted(scores, reverse=True)[:5])
    assert len(postprocess(raw, IDENTITY)) == 20 and postprocess(raw, IDENTITY, max_det=0) == []


def test_max_nms_limits_the_candidates_to_the_best_scores() -> None:
    raw = _raw([(50, 50, 10, 10, 0, 0.5), (150, 50, 10, 10, 0, 0.9), (250, 50, 10, 10, 0, 0.7)])
    assert [d.score for d in postprocess(raw, IDENTITY, max_nms=2)] == pytest.approx([0.9, 0.7])


def test_boxes_are_mapped_back_to_the_original_image() -> None:
    _, box = letterbox(np.zeros((300, 1000, 3), np.uint8))  # scale 0.64, 224 rows of padding on top
    (detection,) = postprocess(_raw([(320, 320, 64, 64, 0, 0.9)]), box)
    assert detection.class_id == 0 and detection.score == pytest.approx(0.9)
    assert (detection.x1, detection.y1, detection.x2, detection.y2) == pytest.approx((450, 100, 550, 200))


def test_boxes_are_clipped_to_the_original_image() -> None:
    _, box = letterbox(np.zeros((480, 640, 3), np.uint8))  # image rows are 80..560 in the letterbox
    raw = _raw([(10, 90, 40, 40, 1, 0.9), (630, 555, 40, 40, 2, 0.8)])
    first, second = postprocess(raw, box)
    assert (first.x1, first.y1, first.x2, first.y2) == (0, 0, 30, 30)
    assert (second.x1, second.y1, second.x2, second.y2) == (610, 455, 640, 480)


def test_nothing_above_the_threshold_gives_no_detections() -> None:
    raw = np.zeros((7, 8400), np.float32)
    assert postprocess(raw, IDENTITY) == []
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.7).shape == (0,)


def test_rejects_a_batched_output_and_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="one image"):
        postprocess(np.zeros((1, 7, 8400), np.float32), IDENTITY)
    with pytest.raises(ValueError, match="conf and iou"):
        postprocess(np.zeros((7, 8400), np.float32), IDENTITY, iou=1.5)


def test_detection_is_a_frozen_value() -> None:
    detection = Detection(1.0, 2.0, 3.0, 4.0, class_id=1, score=0.5)
    with pytest.raises(AttributeError):
        detection.score = 0.9  # type: ignore[misc]
