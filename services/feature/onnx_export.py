"""ONNX export of a backbone, made once and cached by weights hash and the graph's preprocessing version.

The graph holds only the normalisation (and expects ``size x size`` input), which is what
``BackboneSpec.preprocessing`` describes; the per-image option a service runs (cell crop, stain, channels)
happens before the graph, so one export serves every option with the same size and normalisation.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from hemascope.logs import get_logger
from services.feature.backbones import BackboneSpec, build_torch_module

log = get_logger(__name__)

OPSET = 17


def onnx_path(cache_dir: Path, spec: BackboneSpec, weights_hash: str) -> Path:
    """Where the export for these exact weights and graph preprocessing (size, normalisation) lives."""
    return cache_dir / f"{spec.name}-{weights_hash[:16]}-{spec.preprocessing.version}.onnx"


def export_onnx(spec: BackboneSpec, weights: Path, weights_hash: str, target: Path) -> None:
    """Exports the backbone (uint8 NHWC ``pixels`` -> float32 ``embedding``) to ``target`` atomically."""
    import onnx
    import torch

    module = build_torch_module(spec.name, weights)
    size = spec.preprocessing.size
    dummy = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) is deliberate: it needs no onnxscript and exports
            # these plain CNNs exactly; its deprecation and constant-folding notices are noise here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                tmp_name,
                dynamo=False,
                opset_version=OPSET,
                input_names=["pixels"],
                output_names=["embedding"],
                dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
            )
        model = onnx.load(tmp_name)
        onnx.checker.check_model(model)
        for key, value in {
            "backbone": spec.name,
            "weights_sha256": weights_hash,
            "preprocessing": spec.preprocessing.version,
            "dimension": str(spec.dimension),
        }.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp_name)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("onnx_exported", backbone=spec.name, weights=weights_hash[:12], path=str(target))


def ensure_onnx(spec: BackboneSpec, weights: Path, weights_hash: str, cache_dir: Path) -> Path:
    """The cached export for these weights, exporting it first if needed (needs PyTorch then).

    A quantized backbone's weights file is its graph already: it is returned as it is.
    """
    if spec.weights == "quantized":
        return weights
    target = onnx_path(cache_dir, spec, weights_hash)
    if target.is_file():
        return target
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        from hemascope.errors import ConfigurationError

        raise ConfigurationError(
            f"no ONNX export at {target} and PyTorch is not installed to make one; "
            "run `hemascope export-backbone` where PyTorch is installed, or mount the export"
        ) from exc
    export_onnx(spec, weights, weights_hash, target)
    return target
