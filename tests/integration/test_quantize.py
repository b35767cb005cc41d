"""The int8 backbone: made by `hemascope train quantize` from training images only, served as a backbone of
its own (its own weights hash, so caches and bundles never mix it with the fp32 one), close to its source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from hemascope.cli import main
from hemascope.errors import ConfigurationError
from hemascope.files import file_sha256
from hemascope.imaging.inputs import ImageInput
from hemascope.training.multisource import load_sourced
from hemascope.training.quantize import calibration_rows
from hemascope.training.sources import load_spec
from services.feature.backbones import build_torch_module, weights_file
from services.feature.core import EmbedResult, FeatureCore
from services.feature.settings import FeatureSettings

REPO = Path(__file__).resolve().parents[2]
FP32, INT8 = "efficientnet_lite0_blood", "efficientnet_lite0_blood_int8"
pytestmark = pytest.mark.slow


def _source_backbone(folder: Path, trained_on: list[str]) -> None:
    """The shipped fp32 backbone's weights, with ``trained_on`` as the images it was fine-tuned on."""
    shipped = REPO / "models" / "backbones" / FP32
    folder.mkdir(parents=True)
    (folder / "weights.pth").symlink_to(shipped / "weights.pth")
    meta = json.loads((shipped / "backbone.json").read_text())
    (folder / "backbone.json").write_text(json.dumps({**meta, "trained_on": trained_on}))


@pytest.fixture(scope="module")
def backbones(
    tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path, three_labs: Path
) -> Iterator[Path]:
    """A backbone folder with the shipped fp32 backbone and an int8 one quantized from it on 20 images.

    The fp32 backbone's ``backbone.json`` lists no fine-tuning images here: the shipped one was fine-tuned on
    images that this small spec's split would test on, which training refuses (tested below)."""
    folder = tmp_path_factory.mktemp("backbones")
    _source_backbone(folder / FP32, trained_on=[])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HEMASCOPE_BACKBONE_DIR", str(folder))
        env.setenv("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache_dir))
        result = CliRunner().invoke(
            main,
            ["train", "quantize", "--sources", str(three_labs), "--images", "20"],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        yield folder


def test_the_int8_graph_records_its_source_and_calibration(backbones: Path, three_labs: Path) -> None:
    folder = backbones / INT8
    meta = json.loads((folder / "backbone.json").read_text())
    assert meta["weights_sha256"] == file_sha256(folder / "model.onnx")
    assert meta["source"] == {
        "backbone": FP32,
        "weights_sha256": file_sha256(backbones / FP32 / "weights.pth"),
    }
    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert props["backbone"] == INT8 and props["source_weights_sha256"] == meta["source"]["weights_sha256"]
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    graph = onnx.load(str(folder / "model.onnx")).graph
    stem = next(n for n in graph.node if n.op_type == "Conv")
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    assert made_by.get(stem.input[1]) != "DequantizeLinear"  # the stem's weights stay fp32
    assert any(made_by.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type == "Conv")
    # calibrated on 20 FIT-part images of the grouped split: never a calibration or test image of a bundle
    sourced = load_sourced(load_spec(three_labs))
    split = sourced.split(50)
    rows = sourced.train_rows
    held = {file_sha256(sourced.paths[int(i)]) for i in np.concatenate([rows[split.calib], rows[split.test]])}
    assert len(meta["calibration_images"]) == 20
    assert not held & set(meta["calibration_images"])


def test_calibration_rows_are_spread_over_class_and_site(three_labs: Path) -> None:
    sourced = load_sourced(load_spec(three_labs))
    chosen = calibration_rows(sourced, 30, seed=50)
    fit = sourced.train_rows[sourced.split(50).fit]
    assert len(chosen) == 30 and set(chosen.tolist()) <= set(fit.tolist())
    available = np.bincount(sourced.strata(fit))
    counts = np.bincount(sourced.strata(chosen), minlength=len(available))
    # round robin over the (class, site) strata: each gets its share, or all it has when it is small
    for stratum, have in enumerate(available):
        if have:
            assert counts[stratum] == have or counts[stratum] >= counts.max() - 1, (counts, available)
    assert np.array_equal(chosen, calibration_rows(sourced, 30, seed=50))  # the same for the same seed


def test_the_int8_backbone_serves_with_its_own_hash_close_to_its_source(
    backbones: Path, model_cache_dir: Path, real_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEMASCOPE_BACKBONE_DIR", str(backbones))
    vectors, hashes = {}, {}
    for name in (FP32, INT8):
        core = FeatureCore(FeatureSettings(backbone=name, model_cache_dir=model_cache_dir))  # type: ignore[call-arg]
        core.load()
        try:
            results = core.embed_many([ImageInput(p.read_bytes()) for p in real_images[:6]])
            assert all(isinstance(r, EmbedResult) for r in results)
            vectors[name] = np.stack([r.vector for r in results if isinstance(r, EmbedResult)])
            hashes[name] = core.info.weights_hash
        finally:
            core.close()
    assert hashes[INT8] == file_sha256(backbones / INT8 / "model.onnx") != hashes[FP32]
    a, b = vectors[FP32], vectors[INT8]
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert vectors[INT8].shape == (6, 1280)
    assert cosine.min() > 0.9 and not np.allclose(a, b)  # close, but another model


def test_an_int8_backbone_has_no_torch_module_and_names_the_command_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEMASCOPE_BACKBONE_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="hemascope train quantize"):
        weights_file(INT8, None)
    with pytest.raises(ConfigurationError, match="no PyTorch module"):
        build_torch_module(INT8, tmp_path / "model.onnx")


def test_training_on_int8_embeddings_checks_leakage_against_the_source_backbone() -> None:
    from hemascope.training.train import _bundled_backbone, _images_seen_by

    assert _images_seen_by(INT8) == _bundled_backbone(FP32)
    assert _bundled_backbone(INT8) is None  # leave-one-source-out: its frozen embeddings, not the fp32 recipe


def _train_int8_bundle(
    backbones: Path, model_cache_dir: Path, spec: Path, out: Path
) -> subprocess.CompletedProcess[str]:
    """`hemascope train classifiers` on the int8 backbone (logistic regression, 2-fold CV, no folds)."""
    env = {
        **os.environ,
        "HEMASCOPE_BACKBONE_DIR": str(backbones),
        "HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir),
    }
    command = [sys.executable, "-m", "hemascope", "train", "classifiers", "--sources", str(spec)]
    options = ["--backbone", INT8, "--out", str(out), "--models", "logistic_regression", "--cv-folds", "2"]
    return subprocess.run(
        [*command, *options, "--no-loso"], check=False, env=env, capture_output=True, text=True, timeout=900
    )


def test_a_bundle_trained_on_int8_embeddings_takes_only_int8_embeddings(
    backbones: Path, model_cache_dir: Path, three_labs: Path, tmp_path: Path
) -> None:
    from hemascope.bundle import load_bundle
    from hemascope.errors import FailedPrecondition
    from services.classifier.inputs import EmbeddingInput, embedding_matrix

    done = _train_int8_bundle(backbones, model_cache_dir, three_labs, tmp_path / "bundle")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = load_bundle(tmp_path / "bundle").manifest
    int8_hash = file_sha256(backbones / INT8 / "model.onnx")
    assert (manifest.backbone, manifest.weights_hash) == (INT8, int8_hash)
    values = np.zeros(1280, np.float32)
    preprocessing = manifest.preprocessing
    accepted = EmbeddingInput(values, 1280, INT8, int8_hash, preprocessing)
    assert embedding_matrix(manifest, [accepted], max_items=8, require_provenance=True).shape == (1, 1280)
    fp32_hash = file_sha256(backbones / FP32 / "weights.pth")
    for item, reason in (
        (EmbeddingInput(values, 1280, FP32, fp32_hash, preprocessing), "WRONG_BACKBONE"),
        (EmbeddingInput(values, 1280, INT8, fp32_hash, preprocessing), "WRONG_WEIGHTS"),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            embedding_matrix(manifest, [item], max_items=8, require_provenance=True)
        assert refused.value.reason == reason


def test_int8_training_is_refused_when_its_source_saw_the_test_images(
    backbones: Path, model_cache_dir: Path, three_labs: Path, tmp_path: Path
) -> None:
    leaky = tmp_path / "backbones"
    seen = [file_sha256(p) for p in load_sourced(load_spec(three_labs)).paths]
    _source_backbone(leaky / FP32, trained_on=seen)
    (leaky / INT8).symlink_to(backbones / INT8)
    done = _train_int8_bundle(leaky, model_cache_dir, three_labs, tmp_path / "bundle")
    assert done.returncode == 2
    assert f"backbone {INT8} was fine-tuned on images of this run's calibration and test part" in done.stderr
    assert not (tmp_path / "bundle").exists()


def test_op_types_kept_fp32_leave_the_embedding_unrounded(
    backbones: Path, model_cache_dir: Path, real_images: list[Path], tmp_path: Path
) -> None:
    """The shipped recipe rounds the embedding to uint8 levels; keeping the pool and flatten fp32 does not."""
    from hemascope.training.quantize import quantize_graph, served_inputs
    from services.feature.backbones import get_spec
    from services.feature.onnx_export import ensure_onnx

    weights = backbones / FP32 / "weights.pth"
    fp32 = ensure_onnx(get_spec(FP32), weights, file_sha256(weights), model_cache_dir)
    pixels = served_inputs(real_images[:4], "cellcrop-hematoxylin")
    made_by: dict[str, dict[str, str]] = {}
    for name, kept in (("shipped", ()), ("tail", ("GlobalAveragePool", "Flatten"))):
        target = tmp_path / f"{name}.onnx"
        quantize_graph(fp32, target, pixels, method="minmax", batch=4, metadata={}, keep_fp32=kept)
        made_by[name] = {out: n.op_type for n in onnx.load(str(target)).graph.node for out in n.output}
    assert made_by["shipped"]["embedding"] == "DequantizeLinear"
    assert made_by["tail"]["embedding"] == "Flatten"
    assert made_by["tail"]["/GlobalAveragePool_output_0"] == "GlobalAveragePool"
    assert "QuantizeLinear" in made_by["tail"].values()  # the rest is still quantised
