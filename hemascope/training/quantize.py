"""An int8 backbone: ONNX Runtime static quantisation (QDQ) of a fine-tuned backbone's served graph.

The fp32 graph the feature service runs (``services.feature.onnx_export``) is quantised with per-channel
int8 weights and uint8 activations (all but the stem convolution, which stays fp32) whose ranges are
calibrated on training images: images of the FIT part
of the same grouped split the bundles are trained with, so no calibration or test image of a bundle ever
sets a quantisation range. The result is a named backbone of its own (``<source>_int8``), whose weights hash
is the hash of the int8 graph: caches and bundles keyed by it never mix with the fp32 backbone's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.errors import ConfigurationError
from hemascope.training.multisource import SourcedData, load_sourced
from hemascope.training.sources import DatasetSpec

#: Calibration methods of ``onnxruntime.quantization`` by the name the command takes.
METHODS = ("minmax", "percentile", "entropy")
METADATA = "backbone.json"
FORMAT = 1


@dataclass(frozen=True)
class QuantizeConfig:
    sources: Sequence[DatasetSpec]
    out: Path
    name: str = "efficientnet_lite0_blood_int8"
    images: int = 256
    method: str = "minmax"
    seed: int = 50
    batch: int = 16
    command: str = ""
    log: Callable[[str], None] = field(default=print)


def calibration_rows(sourced: SourcedData, images: int, seed: int) -> NDArray[np.int64]:
    """``images`` rows (indices into the scan) of the FIT part of the training split, spread evenly over the
    (class, site) strata and chosen by ``seed``: every stratum gets its share, small ones all they have."""
    split = sourced.split(seed)
    fit = sourced.train_rows[split.fit]
    strata = sourced.strata(sourced.train_rows)[split.fit]
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(fit[strata == s])) for s in np.unique(strata)]
    chosen: list[int] = []
    while len(chosen) < min(images, len(fit)):
        for pool in pools:
            if pool and len(chosen) < images:
                chosen.append(int(pool.pop()))
    return np.asarray(sorted(chosen), dtype=np.int64)


def served_inputs(paths: Sequence[Path], option: str) -> NDArray[np.uint8]:
    """What the feature service feeds the graph for each image: decoded, then prepared with ``option``."""
    from hemascope.imaging.decode import decode_image
    from hemascope.imaging.preprocess import get_preprocessing

    prepare = get_preprocessing(option).prepare
    return np.stack([prepare(decode_image(p.read_bytes()).pixels) for p in paths])


class CalibrationBatches:
    """``onnxruntime.quantization.CalibrationDataReader`` (and an iterable of input feeds, as
    ``qdq_loss_debug`` reads them): the calibration inputs in batches."""

    def __init__(self, name: str, pixels: NDArray[np.uint8], batch: int) -> None:
        self._batches: Iterator[dict[str, NDArray[np.uint8]]] = iter(
            [{name: pixels[i : i + batch]} for i in range(0, len(pixels), batch)]
        )

    def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
        return next(self._batches, None)

    def __iter__(self) -> Iterator[dict[str, NDArray[np.uint8]]]:
        return self._batches


def quantize_graph(
    fp32: Path,
    target: Path,
    pixels: NDArray[np.uint8],
    *,
    method: str,
    batch: int,
    metadata: dict[str, str],
    keep_fp32: Sequence[str] = (),
) -> None:
    """Quantises the graph at ``fp32`` into ``target`` (atomically), calibrated on ``pixels``.

    The stem convolution, and every node whose op type is in ``keep_fp32``, stay fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ConfigurationError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    input_name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantized = Path(work) / "int8.onnx"
        # The stem convolution stays fp32: its input is the normalised image, and quantising it cost the most
        # (embedding cosine to fp32 on 96 training images: mean 0.988, min 0.964 with it quantised; 0.996 and
        # 0.994 without).
        nodes = onnx.load(str(prepared)).graph.node
        stem = next(n.name for n in nodes if n.op_type == "Conv")
        kept = [n.name for n in nodes if n.op_type in keep_fp32]
        quantize_static(
            str(prepared),
            str(quantized),
            CalibrationBatches(input_name, pixels, batch),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            nodes_to_exclude=[stem, *kept],
        )
        model = onnx.load(str(quantized))
        del model.metadata_props[:]
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(quantized))
        os.replace(quantized, target)


def quantize_backbone(cfg: QuantizeConfig) -> dict[str, Any]:
    """Makes ``<cfg.out>/model.onnx`` and ``backbone.json`` for the quantized backbone ``cfg.name``."""
    import onnxruntime

    from hemascope.files import file_sha256
    from services.feature.backbones import QUANTIZED_GRAPH, get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.settings import FeatureSettings

    spec = get_spec(cfg.name)
    if spec.weights != "quantized" or spec.source is None:
        raise ConfigurationError(f"backbone {cfg.name} is not a quantized backbone")
    source = get_spec(spec.source)
    started = time.perf_counter()
    sourced = load_sourced(cfg.sources, log=cfg.log)
    rows = calibration_rows(sourced, cfg.images, cfg.seed)
    paths = [sourced.paths[int(i)] for i in rows]
    option = source.trained_on or source.preprocessing.name
    cfg.log(f"calibrating on {len(paths)} FIT-part images ({option})")
    pixels = served_inputs(paths, option)
    weights = weights_file(source.name, None)
    weights_hash = file_sha256(weights)
    fp32 = ensure_onnx(source, weights, weights_hash, FeatureSettings().model_cache_dir)  # type: ignore[call-arg]
    target = cfg.out / QUANTIZED_GRAPH
    quantize_graph(
        fp32,
        target,
        pixels,
        method=cfg.method,
        batch=cfg.batch,
        metadata={
            "backbone": cfg.name,
            "source_backbone": source.name,
            "source_weights_sha256": weights_hash,
            "preprocessing": spec.preprocessing.version,
            "dimension": str(spec.dimension),
            "calibration": f"{cfg.method}, {len(paths)} images, seed {cfg.seed}",
        },
    )
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": cfg.name,
        "quantization": {
            "runtime": f"onnxruntime {onnxruntime.__version__}",
            "format": "QDQ",
            "weights": "int8, per channel; the stem convolution stays fp32",
            "activations": "uint8, per tensor",
            "calibration": cfg.method,
        },
        "source": {"backbone": source.name, "weights_sha256": weights_hash},
        "calibration_images": sorted(file_sha256(p) for p in paths),
        "calibration_rows": "FIT part of the grouped split (seed "
        f"{cfg.seed}), spread over class and site; never a bundle's calibration or test image",
        "preprocessing_option": option,
        "weights_sha256": file_sha256(target),
        "command": cfg.command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (cfg.out / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
    return meta
