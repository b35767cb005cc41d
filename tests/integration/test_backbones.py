"""Backbones: ONNX export parity with PyTorch on real images, ResNet50 checkpoints, export caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hemascope.errors import ConfigurationError
from hemascope.files import file_sha256
from hemascope.imaging.decode import decode_image
from hemascope.imaging.inputs import ImageInput
from services.feature.backbones import build_torch_module, get_spec, weights_file
from services.feature.core import FeatureCore
from services.feature.onnx_export import ensure_onnx
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

pytestmark = pytest.mark.slow


def _batch(name: str, paths: list[Path]) -> np.ndarray:
    spec = get_spec(name)
    return np.stack([spec.preprocessing.resize(decode_image(p.read_bytes()).pixels) for p in paths])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_onnx_matches_pytorch_on_real_images(
    name: str, real_images: list[Path], model_cache_dir: Path, resnet50_checkpoint: Path
) -> None:
    weights = weights_file(name, resnet50_checkpoint)
    spec = get_spec(name)
    path = ensure_onnx(spec, weights, file_sha256(weights), model_cache_dir)
    pixels = _batch(name, real_images)
    onnx_out = OnnxEmbedder(path).run(pixels)
    with torch.no_grad():
        torch_out = build_torch_module(name, weights)(torch.from_numpy(pixels)).numpy()
    assert onnx_out.shape == torch_out.shape == (len(real_images), spec.dimension)
    assert _cosines(onnx_out, torch_out).min() >= 0.9999


def test_torch_normalisation_matches_numpy_reference(resnet50_checkpoint: Path) -> None:
    module = build_torch_module("resnet50", resnet50_checkpoint)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    reference = get_spec("resnet50").preprocessing.normalise(pixels)
    ours = module.normalise(torch.from_numpy(pixels)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_export_is_cached_by_weights_hash(
    model_cache_dir: Path, resnet50_checkpoint: Path, tmp_path: Path
) -> None:
    spec = get_spec("resnet50")
    first = ensure_onnx(spec, resnet50_checkpoint, file_sha256(resnet50_checkpoint), model_cache_dir)
    stamp = first.stat().st_mtime_ns
    again = ensure_onnx(spec, resnet50_checkpoint, file_sha256(resnet50_checkpoint), model_cache_dir)
    assert again == first and again.stat().st_mtime_ns == stamp
    state = torch.load(resnet50_checkpoint, weights_only=True)
    state["conv1.weight"] = state["conv1.weight"] * 0.5
    other = tmp_path / "other.pth"
    torch.save(state, other)
    assert file_sha256(other) != file_sha256(resnet50_checkpoint)
    assert ensure_onnx(spec, other, file_sha256(other), tmp_path / "cache") != first


def test_resnet50_service_core_embeds_2048(
    resnet50_checkpoint: Path, model_cache_dir: Path, real_images: list[Path]
) -> None:
    settings = FeatureSettings(
        backbone="resnet50", resnet50_checkpoint=resnet50_checkpoint, model_cache_dir=model_cache_dir
    )
    core = FeatureCore(settings)
    core.load()
    try:
        result = core.embed(ImageInput(real_images[0].read_bytes()))
        assert result.vector.shape == (2048,) and result.vector.dtype == np.float32
        assert core.info.weights_hash == file_sha256(resnet50_checkpoint)
    finally:
        core.close()


def _load(tmp_path: Path, checkpoint: Path | None) -> None:
    settings = FeatureSettings(backbone="resnet50", resnet50_checkpoint=checkpoint, model_cache_dir=tmp_path)
    FeatureCore(settings).load()


def test_resnet50_without_checkpoint_stops_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="HEMASCOPE_FEATURE_RESNET50_CHECKPOINT"):
        _load(tmp_path, None)
    with pytest.raises(ConfigurationError, match="not found"):
        _load(tmp_path, tmp_path / "missing.pth")


def test_mismatched_checkpoint_stops_startup(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    wrong = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigurationError, match="does not match the architecture"):
        _load(tmp_path, wrong)


def test_corrupt_checkpoint_stops_startup(tmp_path: Path, resnet50_checkpoint: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(resnet50_checkpoint.read_bytes()[:100_000])
    with pytest.raises(
        ConfigurationError, match=r"cannot read checkpoint .*truncated.pth: not a PyTorch state dict"
    ):
        _load(tmp_path, truncated)


def test_wrapped_state_dict_is_accepted(tmp_path: Path, resnet50_checkpoint: Path) -> None:
    state = torch.load(resnet50_checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    module = build_torch_module("resnet50", wrapped)
    with torch.no_grad():
        out = module(torch.zeros((1, 224, 224, 3), dtype=torch.uint8))
    assert out.shape == (1, 2048)
