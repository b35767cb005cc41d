"""Our NumPy detector pipeline against Ultralytics' own predictions on real BCCD images.

Ours: ``decode_image`` -> ``letterbox`` -> onnxruntime on ``detector.onnx`` -> ``postprocess``. Reference:
``YOLO(...).predict(path, imgsz=640, conf=0.25, iou=0.7, device="cpu", rect=False)``.

``rect=False`` matters: ``detector.onnx`` has dynamic height/width axes, and for such a model (and for ``.pt``
weights) Ultralytics' predict letterboxes to the minimum stride-32 rectangle (640 x 480 for BCCD, no
padding) instead of the 640 x 640 square a static model gets. The service always feeds the square, so the
reference is asked for the square too; with the default it finds different (more) boxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from hemascope.data import REPO_ROOT
from hemascope.detection.yolo_env import import_ultralytics
from hemascope.imaging.decode import decode_image
from services.detector.postprocess import postprocess
from services.detector.preprocess import letterbox

MODEL_DIR = REPO_ROOT / "models" / "detector-bccd"
YOLO_ENV = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "OMP_NUM_THREADS")
N_VAL_IMAGES = 10
PREDICT = {"imgsz": 640, "conf": 0.25, "iou": 0.7, "device": "cpu", "rect": False, "verbose": False}

Rows = NDArray[np.float64]  # (n, 6): x1, y1, x2, y2, score, class


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The ultralytics module, imported offline with a private config folder; cwd in tmp while it runs."""
    with pytest.MonkeyPatch.context() as mp:
        for name in YOLO_ENV:  # restored afterwards; Ultralytics' own state stays for the session
            mp.delenv(name, raising=False)
        mp.chdir(tmp_path_factory.mktemp("yolo-cwd"))
        yield import_ultralytics(tmp_path_factory.mktemp("yolo-config")).ultralytics


@pytest.fixture(scope="module")
def images(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """10 BCCD val JPEGs (640 x 480) plus PNGs that take the other letterbox paths."""
    bccd = data_dir / "bccd"
    names = (bccd / "ImageSets" / "Main" / "val.txt").read_text().split()[:N_VAL_IMAGES]
    paths = [bccd / "JPEGImages" / f"{name}.jpg" for name in names]
    assert len(paths) == N_VAL_IMAGES and all(p.is_file() for p in paths)
    out = tmp_path_factory.mktemp("bccd-variants")
    with Image.open(paths[0]) as first, Image.open(paths[1]) as second:
        variants = {
            "resized-800x600.png": first.convert("RGB").resize((800, 600), Image.Resampling.BILINEAR),
            "crop-500x371.png": second.convert("RGB").crop((70, 50, 570, 421)),  # scale up, odd padding
            "crop-300x450.png": first.convert("RGB").crop((200, 10, 500, 460)),  # portrait: left/right pad
        }
    for name, image in variants.items():
        image.save(out / name)  # PNG: Pillow and OpenCV read exactly the same pixels
    return [*paths, *(out / name for name in variants)]


@pytest.fixture(scope="module")
def ours(images: list[Path]) -> dict[Path, Rows]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL_DIR / "detector.onnx"), providers=["CPUExecutionProvider"])
    found = {}
    for path in images:
        tensor, box = letterbox(decode_image(path.read_bytes()).pixels)
        (raw,) = session.run(["output0"], {"images": tensor[None]})
        rows = [(d.x1, d.y1, d.x2, d.y2, d.score, d.class_id) for d in postprocess(raw[0], box)]
        found[path] = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return found


def _predict(yolo: Any, weights: str, images: list[Path]) -> dict[Path, Rows]:
    model = yolo.YOLO(str(MODEL_DIR / weights), task="detect")
    found = {}
    for path in images:
        (result,) = model.predict(str(path), **PREDICT)
        boxes = result.boxes
        columns = [boxes.xyxy.numpy(), boxes.conf.numpy()[:, None], boxes.cls.numpy()[:, None]]
        found[path] = np.concatenate(columns, 1).astype(np.float64)
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(w * h / (area_a[:, None] + area_b[None, :] - w * h))


def _match(got: Rows, want: Rows) -> tuple[float, float]:
    """Pairs boxes one-to-one (same class, greedy by IoU); returns the max coordinate and score deviations."""
    assert len(got) == len(want), f"{len(got)} boxes, Ultralytics {len(want)}"
    assert sorted(got[:, 5]) == sorted(want[:, 5])
    iou = _iou(got[:, :4], want[:, :4])
    iou[got[:, 5][:, None] != want[:, 5][None, :]] = -1.0
    box_dev = score_dev = 0.0
    for _ in range(len(got)):
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        assert iou[i, j] > 0.5, f"box {got[i]} has no counterpart of its class in Ultralytics' result"
        box_dev = max(box_dev, float(np.abs(got[i, :4] - want[j, :4]).max()))
        score_dev = max(score_dev, abs(float(got[i, 4] - want[j, 4])))
        iou[i, :], iou[:, j] = -2.0, -2.0
    return box_dev, score_dev


def _compare(ours: dict[Path, Rows], theirs: dict[Path, Rows]) -> tuple[float, float]:
    devs = [_match(ours[path], theirs[path]) for path in ours]
    assert sum(len(rows) for rows in ours.values()) > 100  # real detections, not empty lists agreeing
    return max(d[0] for d in devs), max(d[1] for d in devs)


def test_matches_ultralytics_onnx_predictions(
    yolo: Any, images: list[Path], ours: dict[Path, Rows], record_property: Any
) -> None:
    box_dev, score_dev = _compare(ours, _predict(yolo, "detector.onnx", images))
    record_property("onnx_max_box_deviation_px", box_dev)
    record_property("onnx_max_score_deviation", score_dev)
    print(f"ONNX parity: max box deviation {box_dev:.2e} px, max score deviation {score_dev:.2e}")
    assert box_dev <= 1.0 and score_dev <= 1e-3


def test_close_to_ultralytics_pytorch_predictions(
    yolo: Any, images: list[Path], ours: dict[Path, Rows], record_property: Any
) -> None:
    box_dev, score_dev = _compare(ours, _predict(yolo, "best.pt", images))
    record_property("pt_max_box_deviation_px", box_dev)
    record_property("pt_max_score_deviation", score_dev)
    print(f"PyTorch parity: max box deviation {box_dev:.2e} px, max score deviation {score_dev:.2e}")
    assert box_dev <= 2.0 and score_dev <= 1e-2


def test_letterbox_is_ultralytics_letterbox(yolo: Any, images: list[Path]) -> None:
    from ultralytics.data.augment import LetterBox

    for path in images:
        pixels = decode_image(path.read_bytes()).pixels
        transform = LetterBox((640, 640), auto=False, scale_fill=False, scaleup=True, center=True)
        bgr = np.asarray(transform(image=np.ascontiguousarray(pixels[..., ::-1])))  # Ultralytics works in BGR
        expected = np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255
        assert np.array_equal(letterbox(pixels)[0], expected), path.name


def test_postprocess_is_ultralytics_nms_on_random_heads(yolo: Any) -> None:
    import torch
    from ultralytics.utils import nms, ops

    rng = np.random.default_rng(0)
    n = 8400
    for shape in ((480, 640), (371, 500), (450, 300)):
        _, box = letterbox(np.zeros((*shape, 3), np.uint8))
        raw = np.zeros((7, n), np.float32)
        raw[:2] = rng.uniform(-20, 660, (2, n))
        raw[2:4] = rng.uniform(2, 90, (2, n))
        raw[4:] = rng.uniform(0, 0.2, (3, n))
        best = rng.permutation(np.linspace(0.01, 0.99, n, dtype=np.float32))  # distinct: no sort ties
        raw[4 + rng.integers(0, 3, n), np.arange(n)] = best
        want = nms.non_max_suppression(torch.from_numpy(raw[None].copy()), 0.25, 0.7, max_det=300)[0]
        want[:, :4] = ops.scale_boxes((640, 640), want[:, :4], shape)
        got = postprocess(raw, box)
        assert len(got) == len(want) == 300  # max_det reached
        rows = np.asarray([(d.x1, d.y1, d.x2, d.y2, d.score, d.class_id) for d in got])
        np.testing.assert_allclose(rows, want.numpy(), atol=1e-3, rtol=0)
