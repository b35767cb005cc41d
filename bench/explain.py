"""Explain benchmark: latency of each CAM method on the CPU, against a plain forward pass in the same run.

Run: ``.venv/bin/python bench/explain.py [--bundle PATH] [--rounds N] [--images N]``.

What is measured, in one process, on ``--images`` real held-out-style JPEGs (val split, round-robin over the
classes), with the bundle's backbone (EfficientNet-Lite0 by default) in PyTorch on the CPU:

1. **baseline** -- a plain forward pass: the backbone's pooled embedding of one prepared 224x224 image
   (:class:`services.explain.network.SplitBackbone`, ``torch.inference_mode``).
2. **gradcam / gradcam++** for logistic regression and **ablationcam** for every non-differentiable model:
   :meth:`services.explain.cam.CamExplainer.explain` on one prepared image (body forward + the method).
   Ablation-CAM twice: with the ``pooled`` engine (the service's default) and, as ``ablationcam library``,
   with the grad-cam library's AblationCAM (the reference; ``--no-library`` skips it). The largest
   difference between the two engines' maps over the images is printed too.
3. **full** -- what one explain request does besides the network call: decode the JPEG, prepare, explain,
   upsample the map to the original size, JET overlay and PNG encoding; for Grad-CAM (LR) and for every
   Ablation-CAM model (pooled engine).

The methods are timed interleaved, ``--rounds`` rounds of an untimed and a timed call each, so that every
method sees the same load on a shared machine; p50 and p90 per method, and the ratio of p50 to the
baseline's p50. Targets: Grad-CAM for logistic regression within 3x the plain forward pass, every
model's default explanation within 5x. The CPU other processes used during the run is printed; above
10% the numbers are disturbed. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib.cpu import DISTURBED_FOREIGN_PCT, cpu_snapshot, cpu_usage
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.stats import Latency, percentiles
from benchlib.table import disturbed_warning

from hemascope.bundle import load_bundle
from hemascope.data import shared_data_dir
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import preprocessing_for_version
from services.explain.cam import (
    ABLATIONCAM,
    GRADCAM,
    GRADCAM_PLUS_PLUS,
    LIBRARY,
    POOLED,
    CamExplainer,
    default_method,
)
from services.explain.network import split_backbone
from services.explain.overlay import full_size_map, overlay, to_png
from services.feature.backbones import weights_file

BASELINE = "baseline (forward pass)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, default=Path("models/bloodcells-5class"))
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per method (interleaved)")
    parser.add_argument("--images", type=int, default=10, help="real images cycled through")
    parser.add_argument(
        "--library",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the grad-cam library's Ablation-CAM (the reference engine)",
    )
    return parser.parse_args(argv)


def load_images(count: int) -> list[bytes]:
    root = shared_data_dir() / "bloodcells-5class" / "val"
    if not root.is_dir():
        raise SystemExit(f"dataset not found at {root}; set HEMASCOPE_DATA_DIR")
    per_class = [sorted(folder.glob("*.jpg")) for folder in sorted(root.iterdir()) if folder.is_dir()]
    ordered = [path for group in zip(*per_class, strict=False) for path in group]
    return [path.read_bytes() for path in ordered[:count]]


def interleaved(calls: dict[str, Callable[[int], Any]], rounds: int) -> dict[str, Latency]:
    """p50/p90 per call over ``rounds`` rounds, each round calling every one twice and timing the second
    call: on a shared machine every method then sees the same disturbance, so the ratios stay comparable, and
    no method pays for the memory the previous one (Ablation-CAM's large batches) left behind."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(rounds):
        for name, call in calls.items():
            call(index)
            started = time.perf_counter()
            call(index)
            samples[name].append(1000 * (time.perf_counter() - started))
    out = {}
    for name, values in samples.items():
        p50, p90 = percentiles(values, [50, 90])
        out[name] = Latency(p50, p90, len(values), 0)
    return out


def engine_agreement(
    pooled: CamExplainer, library: CamExplainer, prepared: Sequence[Any], models: Sequence[str]
) -> dict[str, float]:
    """Per model, the largest absolute difference between the two engines' maps over ``prepared``."""
    out = {}
    for model in models:
        out[model] = max(
            float(
                np.abs(
                    pooled.explain(p, model, None, ABLATIONCAM).heatmap
                    - library.explain(p, model, None, ABLATIONCAM).heatmap
                ).max()
            )
            for p in prepared
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    bundle = load_bundle(args.bundle)
    preprocessing = preprocessing_for_version(bundle.manifest.preprocessing)
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    explainer = CamExplainer(backbone, bundle, ablation_engine=POOLED)
    reference = CamExplainer(backbone, bundle, ablation_engine=LIBRARY)
    encoded = load_images(args.images)
    prepared = [preprocessing.prepare(decode_image(data).pixels) for data in encoded]
    n = len(prepared)

    def forward(i: int) -> Any:
        with torch.inference_mode():
            return backbone(torch.from_numpy(prepared[i % n][None].copy()))

    def explain(model: str, method: str, by: CamExplainer = explainer) -> Callable[[int], Any]:
        return lambda i: by.explain(prepared[i % n], model, None, method)

    def full(model: str, method: str) -> Callable[[int], Any]:
        def call(i: int) -> bytes:
            pixels = decode_image(encoded[i % n]).pixels
            result = explainer.explain(preprocessing.prepare(pixels), model, None, method)
            height, width = pixels.shape[:2]
            return to_png(overlay(pixels, full_size_map(result.heatmap, width, height)))

        return call

    calls: dict[str, Callable[[int], Any]] = {BASELINE: forward}
    differentiable = [m for m in bundle.models if default_method(bundle, m) == GRADCAM]
    for model in differentiable:
        calls[f"{GRADCAM} {model}"] = explain(model, GRADCAM)
        calls[f"{GRADCAM_PLUS_PLUS} {model}"] = explain(model, GRADCAM_PLUS_PLUS)
    ablation_models = [m for m in bundle.models if m not in differentiable]
    for model in ablation_models:
        calls[f"{ABLATIONCAM} {model}"] = explain(model, ABLATIONCAM)
        if args.library:
            calls[f"{ABLATIONCAM} {LIBRARY} {model}"] = explain(model, ABLATIONCAM, reference)
    calls |= {f"full {GRADCAM} {m}": full(m, GRADCAM) for m in differentiable}
    calls |= {f"full {ABLATIONCAM} {m}": full(m, ABLATIONCAM) for m in ablation_models}
    before = cpu_snapshot()
    results = interleaved(calls, args.rounds)
    cpu = cpu_usage(before, cpu_snapshot())

    base = results[BASELINE].p50_ms
    agreement = engine_agreement(explainer, reference, prepared, ablation_models) if args.library else {}
    print(f"{'measure':<40}{'p50 ms':>10}{'p90 ms':>10}{'x forward':>11}{'calls':>7}")
    for name, latency in results.items():
        ratio = latency.p50_ms / base
        print(f"{name:<40}{latency.p50_ms:>10.2f}{latency.p90_ms:>10.2f}{ratio:>11.2f}{latency.calls:>7}")
    for model, difference in agreement.items():
        print(f"{ABLATIONCAM} {model}: largest |pooled - library| over map cells and images {difference:.1e}")
    print(f"CPU: bench {cpu.own_pct}%, foreign {cpu.foreign_pct}%, steal {cpu.steal_pct}%")
    if cpu.foreign_pct > DISTURBED_FOREIGN_PCT:
        print(disturbed_warning(cpu.foreign_pct))
    print(machine_line(machine) + f", torch {torch.__version__} ({torch.get_num_threads()} threads)")
    summary = {
        "benchmark": "explain",
        "bundle": bundle.manifest.bundle_version,
        "backbone": bundle.manifest.backbone,
        "images": n,
        "rounds": args.rounds,
        "baseline_p50_ms": base,
        "methods": {
            name: {
                "p50_ms": v.p50_ms,
                "p90_ms": v.p90_ms,
                "calls": v.calls,
                "ratio": round(v.p50_ms / base, 2),
            }
            for name, v in results.items()
        },
        "target_gradcam_lr_within_3x": {
            m: results[f"{GRADCAM} {m}"].p50_ms <= 3 * base for m in differentiable
        },
        "target_every_model_within_5x": {
            m: results[f"{default_method(bundle, m)} {m}"].p50_ms <= 5 * base for m in bundle.models
        },
        "ablation_engines_max_abs_difference": agreement,
        "cpu": vars(cpu),
        "machine": machine_at_end(machine),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
