"""Explain benchmark: latency of each CAM method on the CPU, against a plain forward pass in the same run.

Run: ``.venv/bin/python bench/explain.py [--bundle PATH] [--rounds N] [--images N]``.

What is measured, in one process, on ``--images`` real held-out-style JPEGs (val split, round-robin over the
classes), with the bundle's backbone (EfficientNet-Lite0 by default) in PyTorch on the CPU:

1. **baseline** -- a plain forward pass: the backbone's pooled embedding of one prepared 224x224 image
   (:class:`services.explain.network.SplitBackbone`, ``torch.inference_mode``).
2. **gradcam / gradcam++** for logistic regression and **ablationcam** for every non-differentiable model:
   :meth:`services.explain.cam.CamExplainer.explain` on one prepared image (body forward + the method).
3. **full** -- what one explain request does besides the network call: decode the JPEG, prepare, explain,
   upsample the map to the original size, JET overlay and PNG encoding; for Grad-CAM (LR) and for the
   first Ablation-CAM model.

The methods are timed interleaved, ``--rounds`` rounds of an untimed and a timed call each, so that every
method sees the same load on a shared machine; p50 and p90 per method, and the ratio of p50 to the
baseline's p50. Target: Grad-CAM for logistic regression within
3x the plain forward pass. The CPU other processes used during the run is printed; above 10% the numbers
are disturbed. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from benchlib.cpu import DISTURBED_FOREIGN_PCT, cpu_snapshot, cpu_usage
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.stats import Latency, percentiles
from benchlib.table import disturbed_warning

from hemascope.bundle import load_bundle
from hemascope.data import shared_data_dir
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import preprocessing_for_version
from services.explain.cam import ABLATIONCAM, GRADCAM, GRADCAM_PLUS_PLUS, CamExplainer, default_method
from services.explain.network import split_backbone
from services.explain.overlay import full_size_map, overlay, to_png
from services.feature.backbones import weights_file

BASELINE = "baseline (forward pass)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, default=Path("models/bloodcells-5class"))
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per method (interleaved)")
    parser.add_argument("--images", type=int, default=10, help="real images cycled through")
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


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    bundle = load_bundle(args.bundle)
    preprocessing = preprocessing_for_version(bundle.manifest.preprocessing)
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    explainer = CamExplainer(backbone, bundle)
    encoded = load_images(args.images)
    prepared = [preprocessing.prepare(decode_image(data).pixels) for data in encoded]
    n = len(prepared)

    def forward(i: int) -> Any:
        with torch.inference_mode():
            return backbone(torch.from_numpy(prepared[i % n][None].copy()))

    def explain(model: str, method: str) -> Callable[[int], Any]:
        return lambda i: explainer.explain(prepared[i % n], model, None, method)

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
    for model in bundle.models:
        if model not in differentiable:
            calls[f"{ABLATIONCAM} {model}"] = explain(model, ABLATIONCAM)
    calls |= {f"full {GRADCAM} {m}": full(m, GRADCAM) for m in differentiable}
    ablation_models = [m for m in bundle.models if m not in differentiable]
    if ablation_models:
        calls[f"full {ABLATIONCAM} {ablation_models[0]}"] = full(ablation_models[0], ABLATIONCAM)
    before = cpu_snapshot()
    results = interleaved(calls, args.rounds)
    cpu = cpu_usage(before, cpu_snapshot())

    base = results[BASELINE].p50_ms
    print(f"{'measure':<36}{'p50 ms':>10}{'p90 ms':>10}{'x forward':>11}{'calls':>7}")
    for name, latency in results.items():
        ratio = latency.p50_ms / base
        print(f"{name:<36}{latency.p50_ms:>10.2f}{latency.p90_ms:>10.2f}{ratio:>11.2f}{latency.calls:>7}")
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
        "cpu": vars(cpu),
        "machine": machine_at_end(machine),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
