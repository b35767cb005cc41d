"""How close int8 recipes come to the fp32 backbone: calibration methods, an fp32 embedding tail, and where in
the network the error arises.

Run (from the repository root, with the shared data)::

    .venv/bin/python bench/int8_calibration.py [--sources configs/data/three-labs.yaml] [--images 256]
        [--eval-images 384] [--variants minmax,percentile,entropy,minmax+fp32-tail] [--layers 64]

Every variant quantises the served ``efficientnet_lite0_blood`` graph with :func:`quantize_graph` (the stem
convolution fp32, as shipped) on the calibration images ``hemascope train quantize`` uses (256 FIT-part
images of the bundles' grouped split, spread over class and site), and is scored on other FIT-part images
(never a calibration, bundle calibration or test image): cosine and relative L2 error of each image's
embedding against the fp32 graph's. ``+fp32-tail`` keeps the global average pool and the flatten in fp32, so
the embedding itself is not rounded to 256 levels. With ``--layers N`` the shipped recipe's intermediate
activations are compared with the fp32 graph's on N of those images (ONNX Runtime's ``qdq_loss_debug``:
signal-to-quantisation-noise ratio in dB per tensor; the lowest are printed).

Choosing a recipe on these figures keeps the leave-one-source-out table (``bench/int8.py``) out of the
choice. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.files import file_sha256
from hemascope.training.multisource import load_sourced
from hemascope.training.quantize import (
    METHODS,
    CalibrationBatches,
    calibration_rows,
    quantize_graph,
    served_inputs,
)
from hemascope.training.sources import load_spec

SOURCE = "efficientnet_lite0_blood"
TAIL = "+fp32-tail"
TAIL_OPS = ("GlobalAveragePool", "Flatten")
DEFAULT_VARIANTS = ("minmax", "percentile", "entropy", f"minmax{TAIL}")


def _embed(graph: Path, pixels: NDArray[np.uint8], batch: int = 32) -> NDArray[np.float64]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(parts).astype(np.float64)


def fidelity(reference: NDArray[np.float64], other: NDArray[np.float64]) -> dict[str, float]:
    """Per-image cosine and relative L2 error of ``other`` against ``reference`` (rows are embeddings)."""
    norms = np.linalg.norm(reference, axis=1)
    cosine = (reference * other).sum(axis=1) / (norms * np.linalg.norm(other, axis=1))
    relative = np.linalg.norm(reference - other, axis=1) / norms
    return {
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_p01": round(float(np.quantile(cosine, 0.01)), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "relative_error_mean": round(float(relative.mean()), 4),
        "distinct_values": int(np.unique(other).size),
    }


def layer_errors(fp32: Path, int8: Path, pixels: NDArray[np.uint8], work: Path) -> list[tuple[str, float]]:
    """Each quantised activation's SQNR (dB) against the fp32 graph's on ``pixels``, lowest first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, float_aug, quant_aug = work / "prepared.onnx", work / "fp32_aug.onnx", work / "int8_aug.onnx"
    quant_pre_process(str(fp32), str(prepared))  # the node names the quantised graph was made from
    modify_model_output_intermediate_tensors(str(prepared), str(float_aug))
    modify_model_output_intermediate_tensors(str(int8), str(quant_aug))
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    matching = create_activation_matching(
        collect_activations(str(quant_aug), CalibrationBatches(name, pixels, 16)),
        collect_activations(str(float_aug), CalibrationBatches(name, pixels, 16)),
    )
    errors = compute_activation_error(matching)
    found = [(tensor, float(e["xmodel_err"])) for tensor, e in errors.items() if "xmodel_err" in e]
    return sorted(found, key=lambda item: item[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=Path("configs/data/three-labs.yaml"))
    parser.add_argument("--images", type=int, default=256, help="calibration images")
    parser.add_argument("--eval-images", type=int, default=384)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--layers", type=int, default=64, help="images for the per-tensor errors (0: skip)")
    parser.add_argument("--seed", type=int, default=50)
    args = parser.parse_args(argv)
    from services.feature.backbones import get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.settings import FeatureSettings

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        if variant.removesuffix(TAIL) not in METHODS:
            parser.error(f"unknown variant {variant!r}: a method ({', '.join(METHODS)}), optionally {TAIL}")
    sourced = load_sourced(load_spec(args.sources), log=lambda _line: None)
    calibration = calibration_rows(sourced, args.images, args.seed)
    fit = sourced.train_rows[sourced.split(args.seed).fit]
    rng = np.random.default_rng(args.seed + 1)
    others = np.setdiff1d(fit, calibration)
    scored = np.sort(rng.choice(others, min(args.eval_images, others.size), replace=False))
    source = get_spec(SOURCE)
    option = source.trained_on or source.preprocessing.name
    weights = weights_file(SOURCE, None)
    fp32 = ensure_onnx(source, weights, file_sha256(weights), FeatureSettings().model_cache_dir)  # type: ignore[call-arg]
    calibration_pixels = served_inputs([sourced.paths[int(i)] for i in calibration], option)
    scored_pixels = served_inputs([sourced.paths[int(i)] for i in scored], option)
    reference = _embed(fp32, scored_pixels)
    result: dict[str, Any] = {
        "calibration_images": len(calibration),
        "scored_images": len(scored),
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for variant in variants:
            started = time.perf_counter()
            graph = work / f"{variant}.onnx"
            quantize_graph(
                fp32,
                graph,
                calibration_pixels,
                method=variant.removesuffix(TAIL),
                batch=16,
                metadata={},
                keep_fp32=TAIL_OPS if variant.endswith(TAIL) else (),
            )
            figures = {**fidelity(reference, _embed(graph, scored_pixels)), "seconds": 0.0}
            figures["seconds"] = round(time.perf_counter() - started, 1)
            result["variants"][variant] = figures
            print(json.dumps({"variant": variant, **figures}), flush=True)
        if args.layers > 0:
            shipped = work / "minmax-layers.onnx"
            quantize_graph(fp32, shipped, calibration_pixels, method="minmax", batch=16, metadata={})
            errors = layer_errors(fp32, shipped, scored_pixels[: args.layers], work)
            values = np.array([e for _, e in errors])
            result["layers"] = {
                "tensors": len(errors),
                "sqnr_db": {
                    "min": round(float(values.min()), 2),
                    "median": round(float(np.median(values)), 2),
                    "max": round(float(values.max()), 2),
                },
                "lowest": [{"tensor": t, "sqnr_db": round(e, 2)} for t, e in errors[:10]],
            }
            print(json.dumps({"layers": result["layers"]["sqnr_db"]}), flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
