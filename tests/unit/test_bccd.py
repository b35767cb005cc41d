"""VOC parsing, clipping, dropping and counting, the YOLO label format and the synthetic-box variant."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]
from PIL import Image

from hemascope.datasets import CLASSES
from hemascope.detection.bccd import (
    BCCD_CLASSES,
    clip_box,
    convert_bccd,
    normalise_class_name,
    parse_voc,
    to_yolo,
)
from hemascope.detection.card import format_metrics_table, render_model_card
from hemascope.detection.synthetic_boxes import convert_cells
from hemascope.detection.train import _best_epoch, extract_metrics, load_data_yaml
from hemascope.detection.yolo_dataset import ConversionReport, parse_yolo_label_file, yolo_label_line

W, H = 100, 80


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, tuple[Any, ...]]]) -> str:
    size_xml = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    )
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def make_voc(
    root: Path, images: dict[str, tuple[tuple[int, int], str]], splits: dict[str, list[str]]
) -> Path:
    """``images``: id -> (real JPEG size, XML text); ``splits``: split -> ids."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for image_id, (size, xml) in images.items():
        Image.new("RGB", size, (200, 120, 120)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    a = voc_xml(
        "a.jpg",
        (W, H),
        [
            ("WBC", (10, 10, 50, 40)),  # kept as is
            ("RBC", (60, -5, 120, 30)),  # out of the image on two sides: clipped
            ("RBC", (20, 20, 20, 30)),  # degenerate: zero width
            ("\n  RBC \t", (30, 30, 40, 40)),  # stray whitespace: normalised, kept
            ("Lymphocyte", (1, 1, 9, 9)),  # unknown class: dropped
            ("Platelets", (150, 10, 160, 20)),  # wholly outside: dropped
            ("Platelets", (10, 10, 10.5, 20)),  # narrower than a pixel: dropped
            ("WBC", (1, "x", 5, 5)),  # unparseable
        ],
    )
    b = voc_xml("b.jpg", (640, 480), [("rbc", (0, 0, W, H))])  # XML size wrong; letter case forgiven
    c = voc_xml("c.jpg", (W, H), [])  # no objects
    images = {"a": ((W, H), a), "b": ((W, H), b), "c": ((W, H), c)}
    return make_voc(tmp_path / "voc", images, {"train": ["a"], "val": ["b", "c", "missing"]})


def test_parse_voc_keeps_raw_values(voc: Path) -> None:
    ann = parse_voc(voc / "Annotations" / "a.xml")
    assert (ann.filename, ann.width, ann.height) == ("a.jpg", W, H)
    assert len(ann.objects) == 8
    assert ann.objects[3].name == "\n  RBC \t"
    assert ann.objects[1].box == ("60", "-5", "120", "30")


@pytest.mark.parametrize(
    ("corners", "box", "clipped", "reason"),
    [
        (("10", "10", "50", "40"), (10, 10, 50, 40), False, None),
        (("-3", "5", "101", "90"), (0, 5, W, H), True, None),
        (("20", "20", "20", "30"), None, False, "degenerate"),
        (("30", "30", "20", "40"), None, False, "degenerate"),
        (("150", "10", "160", "20"), None, True, "outside_image"),
        (("10", "10", "10.5", "20"), None, False, "too_small"),
        (("99.5", "10", "130", "20"), None, True, "too_small"),
        (("a", "1", "2", "3"), None, False, "unparseable"),
        (None, None, False, "unparseable"),
    ],
)
def test_clip_box(corners: Any, box: Any, clipped: bool, reason: str | None) -> None:
    outcome = clip_box(corners, W, H)
    assert outcome.box == (None if box is None else tuple(float(v) for v in box))
    assert (outcome.clipped, outcome.reason) == (clipped, reason)


def test_class_names_normalised() -> None:
    assert normalise_class_name(" RBC\n", BCCD_CLASSES) == "RBC"
    assert normalise_class_name("platelets", BCCD_CLASSES) == "Platelets"
    assert normalise_class_name("Platelet", BCCD_CLASSES) is None
    assert normalise_class_name("", BCCD_CLASSES) is None


def test_yolo_label_format() -> None:
    assert to_yolo((10, 20, 50, 60), 100, 80) == (0.3, 0.5, 0.4, 0.5)
    assert yolo_label_line(2, 0.3, 0.5, 0.4, 0.5) == "2 0.300000 0.500000 0.400000 0.500000"
    with pytest.raises(ValueError, match="normalised"):
        yolo_label_line(0, 1.2, 0.5, 0.1, 0.1)


def test_conversion_counts_and_layout(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    report = convert_bccd(voc, out)
    assert report.images == {"train": 1, "val": 2}
    assert report.boxes_kept == {
        "train": {"WBC": 1, "RBC": 2, "Platelets": 0},
        "val": {"WBC": 0, "RBC": 1, "Platelets": 0},
    }
    assert report.boxes_clipped == 1
    assert report.boxes_dropped == {
        "degenerate": 1,
        "outside_image": 1,
        "too_small": 1,
        "unknown_class": 1,
        "unparseable": 1,
    }
    assert report.unknown_classes == {"Lymphocyte": 1}
    assert report.normalised_names == {"\n  RBC \t": 1, "rbc": 1}
    assert report.images_without_objects == 1
    assert len(report.size_mismatches) == 1 and report.size_mismatches[0].startswith("b.jpg")
    assert report.missing_annotations == ["val/missing"]
    assert len(report.dropped) == 5

    labels = parse_yolo_label_file(out / "labels" / "train" / "a.txt")
    assert labels[0] == (0, 0.3, 0.3125, 0.4, 0.375)
    assert labels[1] == pytest.approx((1, 0.8, 0.1875, 0.4, 0.375))  # clipped to x 60..100, y 0..30
    assert [row[0] for row in labels] == [0, 1, 1]
    # b: the real size (100x80) is used, not the XML's 640x480: the box covers the whole image
    assert parse_yolo_label_file(out / "labels" / "val" / "b.txt") == [(1, 0.5, 0.5, 1.0, 1.0)]
    assert (out / "labels" / "val" / "c.txt").read_text() == ""

    link = out / "images" / "train" / "a.jpg"
    assert link.is_symlink() and link.resolve() == (voc / "JPEGImages" / "a.jpg").resolve()
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.absolute()) and Path(data["path"]).is_absolute()
    assert (data["train"], data["val"], data["nc"]) == ("images/train", "images/val", 3)
    assert data["names"] == {0: "WBC", 1: "RBC", 2: "Platelets"}
    assert load_data_yaml(out / "data.yaml")[1] == json.loads((out / "conversion.json").read_text())
    saved = json.loads((out / "conversion.json").read_text())
    assert saved == report.to_json() and saved["total_kept"] == 4 and saved["total_dropped"] == 5
    assert ConversionReport.from_json(saved) == report
    text = report.to_text()
    assert "boxes dropped: 5" in text and "'Lymphocyte' x1" in text


def test_conversion_is_idempotent_and_careful(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    first = convert_bccd(voc, out).to_json()
    (out / "stray.txt").write_text("left over")
    second = convert_bccd(voc, out).to_json()
    assert first == second
    assert not (out / "stray.txt").exists() and not out.with_name("yolo.partial").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no earlier conversion"):
        convert_bccd(voc, precious)
    assert (precious / "notes.txt").read_text() == "mine"


def test_missing_split_list(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        convert_bccd(voc, tmp_path / "out", splits=("train", "test"))


def make_cells(root: Path) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("basophil", "myeloblast"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40)).save(root / split / cls / f"{cls[:2]}_{i}.jpg")
    Image.new("RGB", (40, 40)).save(root / "val" / "myeloblast" / "ba_0.jpg")  # same name as a basophil
    (root / "train" / "lymphocyte").mkdir()  # not one of the classes
    (root / "train" / "lymphocyte" / "x.jpg").write_bytes(b"")
    (root / "test" / "basophil").mkdir(parents=True)  # a split that is not converted
    Image.new("RGB", (40, 40)).save(root / "test" / "basophil" / "t.jpg")
    return root


def test_synthetic_boxes(tmp_path: Path) -> None:
    source = make_cells(tmp_path / "cells")
    out = tmp_path / "yolo"
    report = convert_cells(source, out)
    assert report.kind == "synthetic-box"
    assert report.images == {"train": 6, "val": 5}
    assert report.boxes_kept["val"]["myeloblast"] == 3 and report.boxes_kept["val"]["basophil"] == 2
    assert report.skipped == {"images in split 'test'": 1, "folder train/lymphocyte (not a class)": 1}
    my = CLASSES.index("myeloblast")
    assert parse_yolo_label_file(out / "labels" / "train" / "my_0.txt") == [(my, 0.5, 0.5, 0.8, 0.8)]
    assert (out / "labels" / "val" / "myeloblast__ba_0.txt").is_file()  # name clash kept apart
    assert (out / "images" / "val" / "myeloblast__ba_0.jpg").resolve() == source / "val/myeloblast/ba_0.jpg"
    labels = list((out / "labels").rglob("*.txt"))
    assert len(labels) == 11 and all(len(parse_yolo_label_file(p)) == 1 for p in labels)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    readme = " ".join((out / "README.md").read_text().split())
    assert "classification score in disguise" in readme and "source shortcut" in readme.lower()


def test_synthetic_boxes_need_splits(tmp_path: Path) -> None:
    flat = tmp_path / "flat" / "basophil"
    flat.mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(flat / "a.jpg")
    with pytest.raises(ValueError, match="no images for split"):
        convert_cells(tmp_path / "flat", tmp_path / "out")


def fake_det_metrics() -> SimpleNamespace:
    box = SimpleNamespace(
        ap_class_index=np.array([0, 1]),
        class_result=lambda i: [(0.9, 0.8, 0.95, 0.7), (0.5, 0.4, 0.45, 0.2)][i],
    )
    return SimpleNamespace(
        box=box,
        mean_results=lambda: [0.7, 0.6, 0.7, 0.45],
        nt_per_class=np.array([5, 40, 0]),
        nt_per_image=np.array([5, 10, 0]),
        speed={"inference": 1.0},
    )


def test_metrics_and_card() -> None:
    metrics = extract_metrics(fake_det_metrics(), list(BCCD_CLASSES), images=10)
    assert metrics["overall"] == {
        "precision": 0.7,
        "recall": 0.6,
        "mAP50": 0.7,
        "mAP50-95": 0.45,
        "images": 10,
        "instances": 45,
    }
    assert metrics["per_class"]["RBC"]["mAP50"] == 0.45 and metrics["per_class"]["RBC"]["instances"] == 40
    assert metrics["per_class"]["Platelets"]["mAP50"] is None
    table = format_metrics_table(metrics)
    assert "Platelets" in table and "n/a" in table and "0.950" in table
    summary: dict[str, Any] = {
        "data": "/d/data.yaml",
        "classes": list(CLASSES),
        "split": "val",
        "command": "hemascope train detector --data /d/data.yaml --out /o",
        "model": "yolov8n.yaml",
        "seed": 0,
        "epochs_run": 50,
        "best_epoch": 41,
        "train_seconds": 12.0,
        "val_seconds": 1.0,
        "hardware": "CPU x",
        "device": "cpu",
        "versions": {"ultralytics": "8", "torch": "2"},
        "hyperparameters": {"epochs": 50, "imgsz": 640, "workers": 0},
        "requested": {"workers": 2},
        "onnx": {"file": "detector.onnx", "sha256": "ab", "opset": 17},
        "conversion": {"kind": "synthetic-box", "source": "/cells", "images": {"train": 3000}},
        **metrics,
    }
    card = render_model_card(summary, [Path("run/results.png")])
    assert card.count("Not a detection result") == 2  # at the top and under Limits
    assert "| workers | 0 (asked 2) |" in card and "`run/results.png`" in card and "(workers 0)" in card
    summary["conversion"] = {"kind": "bccd", "source": "/bccd"}
    assert "under-annotates red cells" in render_model_card(summary, [])


def test_best_epoch(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text(
        "epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)\n1,1,0.1,0.05\n2,2,0.3,0.2\n3,3,0.4,0.2\n"
    )
    assert _best_epoch(csv) == 2
    assert _best_epoch(tmp_path / "none.csv") is None
