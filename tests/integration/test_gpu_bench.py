"""bench/gpu.py end to end on the CPU: the reference made with the project's own modules, the models rebuilt
with PyTorch alone (as on a GPU machine without the project's dependencies), parity, FLOPs and the tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bench(*args: str) -> None:
    subprocess.run(
        [sys.executable, "bench/gpu.py", *args], cwd=ROOT, check=True, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpubench")
    _bench("prepare", "--out", str(out))
    return out


def test_prepare_writes_the_reference_of_the_served_models(artefacts: Path) -> None:
    meta = json.loads((artefacts / "meta.json").read_text())
    assert meta["backbone"]["name"] == "efficientnet_lite0_blood"
    reference = np.load(artefacts / "reference.npz")
    assert reference["backbone_input"].shape == (4, 224, 224, 3)
    assert reference["backbone_output"].shape == (4, 1280)
    assert reference["detector_input"].shape == (1, 640, 640, 3)
    assert reference["detector_output"].shape[0] == 1


def test_run_rebuilds_both_models_that_match_the_reference(artefacts: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    _bench(
        "run", "--artefacts", str(artefacts), "--out", str(out), "--device", "cpu", "--batches", "1,2",
        "--seconds", "0.05", "--matmul-size", "64", "--precisions", "fp32,fp16+graph",
    )  # fmt: skip
    result = json.loads((out / "gpu.json").read_text())
    assert set(result["matmul_tflops"]) == {"fp32", "bf16"}  # no TF32 or fp16 products on the CPU
    for name in ("backbone", "detector"):
        model = result["models"][name]
        assert set(model["parity"]) == {"fp32"}
        assert model["parity"]["fp32"]["max_rel_diff"] < 1e-4
        assert model["parity"]["fp32"]["min_cosine"] > 0.99999
        # the CPU runs fp32 alone: the CUDA-graph variant is dropped, not reported as a failure
        assert [(row["precision"], row["batch"]) for row in model["rows"]] == [("fp32", 1), ("fp32", 2)]
        assert all(row["images_per_s"] > 0 and row["fraction_of_measured_peak"] > 0 for row in model["rows"])
    # EfficientNet-Lite0 at 224 and YOLOv8n at 640: the FLOP counts the fractions rest on
    assert result["models"]["backbone"]["flops_per_image"] == pytest.approx(0.768e9, rel=0.01)
    assert result["models"]["detector"]["flops_per_image"] == pytest.approx(8.08e9, rel=0.01)
    assert result["onnxruntime"]["detector"]["available"] is False
    table = (out / "gpu.md").read_text()
    assert "| backbone | fp32 | 1 |" in table and "| detector | fp32 | 2 |" in table


def test_parity_exposes_a_model_that_is_not_the_served_one(artefacts: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text((artefacts / "meta.json").read_text())
    reference = dict(np.load(artefacts / "reference.npz"))
    reference["backbone_output"] = reference["backbone_output"][::-1].copy()  # another image's embedding
    np.savez(broken / "reference.npz", **reference)
    out = tmp_path / "results"
    _bench(
        "run", "--artefacts", str(broken), "--out", str(out), "--device", "cpu", "--batches", "1",
        "--seconds", "0.02", "--matmul-size", "64", "--precisions", "fp32",
    )  # fmt: skip
    parity = json.loads((out / "gpu.json").read_text())["models"]["backbone"]["parity"]["fp32"]
    assert parity["max_rel_diff"] > 0.05
