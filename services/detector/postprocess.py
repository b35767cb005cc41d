"""Raw YOLOv8 head output -> detections in original-image pixels, in NumPy (no torch).

Same semantics as Ultralytics 8.4's ``non_max_suppression(multi_label=False, agnostic=False, max_nms=30000,
max_wh=7680)`` followed by ``scale_boxes`` (padding removed, per-axis gain) and clipping:

1. candidates: best class score ``> conf`` (strictly);
2. ``cx, cy, w, h`` -> ``x1, y1, x2, y2`` (letterboxed pixels);
3. at most ``max_nms`` candidates, the highest scores;
4. class-aware greedy NMS: boxes offset by ``class_id * max_wh`` so classes never overlap, a box is dropped
   when its IoU with a kept higher-scoring box is ``> iou``;
5. at most ``max_det`` detections, sorted by score (descending);
6. ``(x - pad) / gain`` per axis, then clipped to ``[0, width] x [0, height]``.

The NMS arithmetic is done in float32 like Ultralytics, so ties and borderline IoUs resolve the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.detector.preprocess import Letterbox

__all__ = ["MAX_NMS", "MAX_WH", "Detection", "nms", "postprocess"]

MAX_NMS = 30000
"""Most candidates that enter NMS (Ultralytics' ``max_nms``)."""
MAX_WH = 7680
"""Per-class coordinate offset separating the classes in NMS (Ultralytics' ``max_wh``)."""


@dataclass(frozen=True)
class Detection:
    """One detected object, in original-image pixel coordinates (clipped to the image)."""

    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int
    score: float


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> NDArray[np.intp]:
    """Greedy NMS (torchvision semantics): indices of the kept ``x1, y1, x2, y2`` boxes, by score descending.

    A box is suppressed when its IoU with an already kept box is strictly greater than ``iou``.
    """
    order = np.argsort(-scores, kind="stable")
    if order.size == 0:
        return order
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap > iou)]  # NaN (two empty boxes) is kept, as in torchvision
    return np.asarray(keep, dtype=np.intp)


def _candidates(
    raw: NDArray[np.float32], conf: float, max_nms: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """xyxy boxes, scores and class ids of the anchors whose best class score is above ``conf``."""
    if raw.ndim != 2 or raw.shape[0] < 5:
        raise ValueError(f"expected one image's head output of shape (4 + classes, anchors), got {raw.shape}")
    preds = np.asarray(raw, dtype=np.float32)
    class_scores = preds[4:]
    class_ids = np.argmax(class_scores, axis=0)
    scores = np.take_along_axis(class_scores, class_ids[None, :], axis=0)[0]
    selected = np.flatnonzero(scores > np.float32(conf))
    if selected.size > max_nms:
        selected = selected[np.argsort(-scores[selected], kind="stable")[:max_nms]]
    cx, cy, w, h = preds[0, selected], preds[1, selected], preds[2, selected], preds[3, selected]
    half_w, half_h = w / np.float32(2), h / np.float32(2)
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
    return boxes, scores[selected], class_ids[selected].astype(np.intp)


def postprocess(
    raw: NDArray[np.float32],
    box: Letterbox,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    max_nms: int = MAX_NMS,
    max_wh: int = MAX_WH,
) -> list[Detection]:
    """One image's raw head output ``(4 + classes, anchors)`` -> detections, highest score first."""
    if not 0 <= conf <= 1 or not 0 <= iou <= 1:
        raise ValueError(f"conf and iou must be in [0, 1], got conf={conf}, iou={iou}")
    boxes, scores, class_ids = _candidates(raw, conf, max_nms)
    if scores.size == 0 or max_det <= 0:
        return []
    offset = (class_ids.astype(np.float32) * np.float32(max_wh))[:, None]
    kept = nms(boxes + offset, scores, iou)[:max_det]
    xyxy = boxes[kept].astype(np.float64)
    xyxy[:, [0, 2]] = ((xyxy[:, [0, 2]] - box.pad_x) / box.gain_x).clip(0, box.width)
    xyxy[:, [1, 3]] = ((xyxy[:, [1, 3]] - box.pad_y) / box.gain_y).clip(0, box.height)
    return [
        Detection(x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), class_id=int(c), score=float(s))
        for (x1, y1, x2, y2), c, s in zip(xyxy, class_ids[kept], scores[kept], strict=True)
    ]
