"""Real BCCD conversion, and a tiny real YOLOv8n training run: offline, on a 4-image subset, in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hemascope.data import REPO_ROOT
from hemascope.detection.bccd import BCCD_CLASSES, convert_bccd
from hemascope.detection.yolo_dataset import ConversionReport, parse_yolo_label_file

YOLO_ENV = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "OMP_NUM_THREADS")


@pytest.fixture(scope="module")
def bccd_yolo(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConversionReport]:
    out = tmp_path_factory.mktemp("bccd") / "yolo"
    return out, convert_bccd(data_dir / "bccd", out)


def test_real_bccd_conversion(bccd_yolo: tuple[Path, ConversionReport], data_dir: Path) -> None:
    out, report = bccd_yolo
    assert report.images == {"train": 205, "val": 87}
    assert report.size_mismatches == [] and report.missing_images == [] and report.missing_annotations == []
    assert report.boxes_dropped == {"degenerate": 2}  # the two zero-size RBC boxes of the data README
    assert report.unknown_classes == {}
    for split, n in report.images.items():
        images = sorted((out / "images" / split).iterdir())
        labels = sorted((out / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert all(p.is_symlink() and p.resolve().is_relative_to(data_dir.resolve()) for p in images)
        boxes = [row for path in labels for row in parse_yolo_label_file(path)]
        assert len(boxes) == sum(report.boxes_kept[split].values())
        assert {row[0] for row in boxes} == set(range(len(BCCD_CLASSES)))
    assert report.boxes_kept["train"]["RBC"] > report.boxes_kept["train"]["WBC"] > 0
    assert json.loads((out / "conversion.json").read_text())["total_kept"] == report.total_kept


def test_real_cells_synthetic_conversion(data_dir: Path, tmp_path: Path) -> None:
    from hemascope.detection.synthetic_boxes import convert_cells

    report = convert_cells(data_dir / "bloodcells-5class", tmp_path / "cells")
    assert report.images == {"train": 3000, "val": 1000}
    assert all(n == 600 for n in report.boxes_kept["train"].values())
    assert report.total_dropped == 0 and (tmp_path / "cells" / "README.md").is_file()


def test_bccd_command_prints_report(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hemascope.commands.detector import run_bccd_to_yolo

    monkeypatch.setenv("HEMASCOPE_DATA_DIR", str(data_dir))
    data_yaml = run_bccd_to_yolo(None, tmp_path / "yolo")
    printed = capsys.readouterr().out
    assert "train: 205 images" in printed and "val: 87 images" in printed and "degenerate 2" in printed
    assert data_yaml == tmp_path / "yolo" / "data.yaml" and data_yaml.is_file()


def _subset(source: Path, target: Path, per_split: int = 2) -> Path:
    """A data.yaml over ``per_split`` images per split of a converted dataset (symlinked images)."""
    for split in ("train", "val"):
        (target / "images" / split).mkdir(parents=True)
        (target / "labels" / split).mkdir(parents=True)
        for image in sorted((source / "images" / split).iterdir())[:per_split]:
            (target / "images" / split / image.name).symlink_to(image.resolve())
            label = source / "labels" / split / f"{image.stem}.txt"
            shutil.copyfile(label, target / "labels" / split / label.name)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(BCCD_CLASSES))
    data_yaml = target / "data.yaml"
    data_yaml.write_text(f"path: {target}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data_yaml


def test_tiny_training_run(
    bccd_yolo: tuple[Path, ConversionReport], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort
    import torch

    from hemascope.detection.train import train_detector

    for name in YOLO_ENV:  # restored after the test; Ultralytics' own state stays for the session
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory stays in tmp_path
    home_config = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "Ultralytics"
    home_config_before = home_config.exists()
    strays = ("runs", "weights", "datasets", "yolov8n.pt", "yolo26n.pt", "yolo11n.pt", "Arial.ttf")
    strays_before = {name for name in strays if (REPO_ROOT / name).exists()}
    data_yaml = _subset(bccd_yolo[0], tmp_path / "subset")
    out = tmp_path / "detector"

    result = train_detector(
        data_yaml, out, epochs=1, imgsz=64, batch=2, config_dir=tmp_path / "yolo-config", log=lambda _: None
    )

    assert result.weights == out / "best.pt" and result.weights.stat().st_size > 1_000_000
    assert result.onnx == out / "detector.onnx", result.onnx_error
    session = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[0] == "batch"  # dynamic batch axis: the detector service micro-batches
    (output,) = session.run(None, {inp.name: np.zeros((2, 3, 64, 64), dtype=np.float32)})
    assert output.shape[:2] == (2, 4 + len(BCCD_CLASSES))

    metrics = json.loads(result.metrics_path.read_text())
    for key in ("overall", "per_class", "hyperparameters", "train_seconds", "hardware", "versions", "onnx"):
        assert key in metrics
    assert set(metrics["overall"]) >= {"mAP50", "mAP50-95", "precision", "recall"}
    assert set(metrics["per_class"]) == set(BCCD_CLASSES)
    assert metrics["overall"]["images"] == 2
    assert metrics["hyperparameters"]["optimizer"] == "Adam" and metrics["hyperparameters"]["cos_lr"] is True
    assert metrics["seed"] == 0 and metrics["onnx"]["sha256"]
    card = result.card_path.read_text()
    assert result.card_path == out / "MODEL_CARD.md"
    assert "mAP50-95" in card and metrics["onnx"]["sha256"] in card and "results.png" in card
    assert (out / "run" / "results.csv").is_file() and (out / "run" / "val").is_dir()
    assert any(p.name == "results.png" for p in result.plots)

    assert torch.get_num_threads() == os.cpu_count()  # Ultralytics' one-thread setting undone
    from ultralytics.utils import USER_CONFIG_DIR  # the folder of the first import in this process

    assert (Path(USER_CONFIG_DIR) / "Arial.ttf").is_file()
    assert home_config.exists() == home_config_before
    assert {name for name in strays if (REPO_ROOT / name).exists()} == strays_before  # nothing in the repo
    assert not list(tmp_path.glob("*.pt")) and not (tmp_path / "runs").exists()


def test_ultralytics_import_leaves_pillow_alone(tmp_path: Path) -> None:
    """Ultralytics patches PIL.Image.open on import; our decoder must still call non-images unsupported."""
    import numpy as np

    from hemascope.detection.yolo_env import import_ultralytics
    from hemascope.errors import InvalidImage
    from hemascope.imaging.decode import decode_image

    import_ultralytics(tmp_path / "yolo-config")
    with pytest.raises(InvalidImage) as info:
        decode_image(np.random.default_rng(3).bytes(5000))
    assert info.value.reason == "UNSUPPORTED_FORMAT"
