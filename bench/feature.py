"""Feature-service benchmark: how close does the gRPC service get to the bare ONNX Runtime session?

Run: ``.venv/bin/python bench/feature.py [--backbone efficientnet_lite0|resnet50|all] [--seconds S]
[--resnet50-checkpoint PATH] [--redis-url URL]``.

What is measured, per backbone, in one run:

1. **Raw session** -- :class:`services.feature.runtime.OnnxEmbedder` on the cached ONNX export, with the
   service's default settings (intra-op threads, providers), at batch 1, 8 and 32. The inputs are real cell
   images from ``<shared data>/bloodcells-5class``, decoded and resized to the model's input once up front
   (``spec.preprocessing.resize``), so only the model runs. ``raw_best_img_s`` is the best of the three: the
   ceiling the service could reach on this machine.
2. **Service throughput** -- the service as it is deployed: a separate process (``hemascope serve feature
   --port 0 --metrics-port 0``), with 1, 4 and 16 client threads calling ``Embed`` on real JPEGs with
   ``skip_cache=True`` (every call decodes, hashes, resizes and runs the model). An in-process server would
   share the benchmark's GIL with the client threads and understate the service. Clients use either one
   channel shared by all stubs or a private channel (own TCP connection) each; both are probed briefly at
   the highest concurrency and the faster is used. Each level warms up, then counts the calls completed
   inside a window of ``--seconds`` (work in flight at both ends of the window cancels out in steady state).
   The mean micro-batch size comes from the service's own ``/metrics``.
3. **Latency** -- one client, p50/p90 of ``Embed`` for a cache miss (images the service has never seen, so
   the full path: lookup, decode, hash, resize, model, cache write) and for a cache hit (the same image
   again), with the default in-process cache and, given ``--redis-url``, with Redis (under a unique key
   prefix whose keys are deleted afterwards).
4. **Miss breakdown** -- the per-image Python work of a miss outside the model (decode, hash, the default
   preprocessing option, protobuf), timed in-process on one real image, to show where the time goes
   besides the model.
5. **Preprocessing, before and after** -- CPU ms per image of the default option's ``prepare`` on the
   throughput images (both scanners: 360x363 and 400x400), the package's OpenCV implementation against the
   SciPy definition it reproduces bit for bit (``tests/reference_preprocess.py``), alternating in one run.
6. **Preprocessing pool** (``--compare-prep-threads N``) -- the throughput levels again on a second service
   process with ``HEMASCOPE_FEATURE_PREPROCESS_THREADS=N`` (0: each RPC thread prepares its own image), its
   ratio against the same raw session.

``ratio = service_16_img_s / raw_best_img_s`` compares the service with the raw session *measured in the
same run*: absolute timings vary between runs on shared machines, the ratio much less. The client threads
run on the same machine as the service and take CPU from it; their share is printed ("client CPU"), as is
the CPU used by other processes during each phase ("foreign CPU"), which flags disturbed numbers.

PyTorch is only imported in child processes (making the random ResNet50 checkpoint, exporting to ONNX), so
the raw session runs in a process as lean as the service's. Without ``--resnet50-checkpoint`` a ResNet50
checkpoint with random weights (fixed seed) is made in a temporary directory: throughput does not depend on
the weight values. The last line printed is one JSON object (with ``--backbone all``: one key per backbone).

Code: this script runs the phases; ``feature_model.py`` (images, export, raw session, breakdown),
``feature_service.py`` (the service process, load and latency) and ``feature_report.py`` (summary, table)
hold the feature-specific parts, ``benchlib/`` the machinery shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.load import CHANNEL_MODES, CLIENT_COUNTS, LoadResult, choose_channel_mode, run_load
from benchlib.machine import machine_info, machine_line
from feature_model import (
    EncodedImage,
    bench_raw,
    embed_requests,
    ensure_export,
    load_images,
    miss_breakdown,
    model_inputs,
    prepare_timings,
    random_resnet50_checkpoint,
)
from feature_report import BackboneRun, print_table, summary
from feature_service import LatencyRun, bench_latency, bench_redis_latency, embed_caller, run_server

from services.feature.backbones import BACKBONES, get_spec
from services.feature.settings import FeatureSettings

THROUGHPUT_IMAGES = 64


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=[*BACKBONES, "all"])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each level")
    parser.add_argument("--resnet50-checkpoint", type=Path, default=None, help="default: random weights")
    parser.add_argument("--redis-url", default=None, help="also measure latency with this Redis")
    parser.add_argument(
        "--channel-mode", default="auto", choices=["auto", *CHANNEL_MODES], help="auto: probe both"
    )
    parser.add_argument(
        "--compare-prep-threads",
        type=int,
        default=None,
        help="also load a service with this many preprocessing threads (0: on the RPC threads)",
    )
    return parser.parse_args(argv)


def backbone_settings(
    name: str, args: argparse.Namespace, workdir: Path, notes: list[str]
) -> FeatureSettings:
    checkpoint = args.resnet50_checkpoint
    if name == "resnet50" and checkpoint is None:
        checkpoint = random_resnet50_checkpoint(workdir)
        notes.append("resnet50 weights are random (seed 0): throughput does not depend on weight values")
    overrides: dict[str, Any] = {"port": 0, "metrics_port": None, "backbone": name}
    overrides["resnet50_checkpoint"] = checkpoint
    return FeatureSettings(**overrides)  # keyword dict: the other fields come from defaults and env


def bench_service(
    settings: FeatureSettings, workdir: Path, args: argparse.Namespace, images: dict[str, list[EncodedImage]]
) -> tuple[str, dict[str, float], list[LoadResult], LatencyRun]:
    make_call = embed_caller(embed_requests(images["throughput"], skip_cache=True))
    with run_server(settings, workdir) as server:
        mode, probe = choose_channel_mode(server, make_call, args.channel_mode, args.warmup, args.seconds)
        results = [run_load(server, make_call, n, mode, args.warmup, args.seconds) for n in CLIENT_COUNTS]
        latency = bench_latency(server, images["throughput"][:8], images["fresh"], args.seconds)
    return mode, probe, results, latency


def compare_prep_threads(
    settings: FeatureSettings,
    workdir: Path,
    args: argparse.Namespace,
    images: dict[str, list[EncodedImage]],
    mode: str,
) -> list[LoadResult]:
    """The throughput levels on a service with ``--compare-prep-threads`` preprocessing threads."""
    make_call = embed_caller(embed_requests(images["throughput"], skip_cache=True))
    env = {"HEMASCOPE_FEATURE_PREPROCESS_THREADS": str(args.compare_prep_threads)}
    with run_server(settings, workdir, **env) as server:
        return [run_load(server, make_call, n, mode, args.warmup, args.seconds) for n in CLIENT_COUNTS]


def bench_backbone(name: str, args: argparse.Namespace, workdir: Path) -> BackboneRun:
    notes: list[str] = []
    settings = backbone_settings(name, args, workdir, notes)
    spec = get_spec(name)
    path, weights_hash = ensure_export(settings)
    fresh_needed = min(1000, int(args.seconds * 200) + 20)
    images = {
        "throughput": load_images("train", THROUGHPUT_IMAGES),
        "fresh": load_images("val", fresh_needed),
    }
    raw, raw_cpu, providers = bench_raw(
        path, settings, model_inputs(images["throughput"], spec), args.seconds
    )
    breakdown = miss_breakdown(images["throughput"][0], spec, weights_hash)
    prepare = prepare_timings(images["throughput"])
    mode, probe, service, memory_latency = bench_service(settings, workdir, args, images)
    compared: dict[int, list[LoadResult]] = {}
    if args.compare_prep_threads is not None:
        compared[args.compare_prep_threads] = compare_prep_threads(settings, workdir, args, images, mode)
    latency = {"memory": memory_latency}
    if args.redis_url:
        latency["redis"] = bench_redis_latency(settings, workdir, args.redis_url, images, args.seconds)
    return BackboneRun(
        name=name,
        onnx=path,
        providers=providers,
        raw=raw,
        raw_cpu=raw_cpu,
        channel_mode=mode,
        channel_probe=probe,
        service=service,
        latency={cache: result for cache, (result, _) in latency.items()},
        latency_cpu={cache: usage for cache, (_, usage) in latency.items()},
        breakdown=breakdown,
        notes=notes,
        prepare=prepare,
        prep_threads=settings.preprocess_threads,
        compared=compared,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    names = list(BACKBONES) if args.backbone == "all" else [args.backbone]
    machine = machine_info()
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hemascope-bench-") as tmp:
        for name in names:
            run = bench_backbone(name, args, Path(tmp))
            summaries[name] = summary(run, args, machine)
            print_table(run, summaries[name])
    print(machine_line(machine))
    print(json.dumps(summaries[names[0]] if len(names) == 1 else summaries), flush=True)


if __name__ == "__main__":
    main()
