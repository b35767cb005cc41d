"""Classifier benchmark: per model, latency of the model called in-process vs through the gRPC service.

Run: ``.venv/bin/python bench/classifier.py [--bundle PATH] [--seconds S] [--batch N] [--samples N]``.

What is measured, in one run, for every model of the bundle and for all models in one call:

1. **In-process** -- :meth:`hemascope.bundle.LoadedBundle.predict` (scaler + model + calibration) on one
   embedding and on a batch of ``--batch`` (256) embeddings: the floor any service could reach. Models get
   ``--model-threads`` threads (default 1, the service's default) both here and in the service.
2. **Through the service** -- the service as deployed, a separate process on free ports (``hemascope serve
   classifier`` when the CLI has it, else ``python -c`` calling :func:`serve_classifier`), one client
   calling ``Classify`` sequentially with the same embeddings and ``models=[name]``. The difference is what
   the service adds: protobuf encoding of 1280 floats per embedding, the network stack, input checks and
   building one ``ModelPrediction`` message per embedding and model.

Each measurement takes ``--seconds`` (at least 10 samples) after two untimed warm-up calls and reports
p50 and p90. The CPU used by other processes during each phase is printed; above 10% the numbers are
disturbed. Without ``--bundle`` a synthetic bundle is trained first (1280-d like the default backbone,
``--samples`` vectors: the SVM's support vectors and the forest's depth scale with it; the study trains on
about 3000): its predictions mean nothing, only its size and shape matter. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.cpu import DISTURBED_FOREIGN_PCT, CpuUsage, cpu_snapshot, cpu_usage
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.service import ServerProcess, hemascope_command, open_channel, start_service
from benchlib.stats import Latency, measure_latency
from benchlib.table import disturbed_warning
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from services.classifier.core import set_model_threads
from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle

ALL = "(all models)"
CALL_LIMIT = 100_000
Results = dict[str, dict[str, Latency]]  # model -> "inprocess_1" / "service_256" / ... -> latency


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, default=None, help="default: a synthetic 1280-d bundle")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=256, help="embeddings in the batch measurement")
    parser.add_argument("--samples", type=int, default=2000, help="synthetic bundle: training vectors")
    parser.add_argument("--dimension", type=int, default=1280, help="synthetic bundle: embedding size")
    parser.add_argument(
        "--model-threads", type=int, default=1, help="threads per model, in-process and in the service"
    )
    return parser.parse_args(argv)


def prepare_bundle(args: argparse.Namespace, workdir: Path) -> tuple[Path, bool]:
    if args.bundle is not None:
        return args.bundle, False
    spec = SyntheticSpec(
        version="bench-synthetic",
        dimension=args.dimension,
        samples=args.samples,
        separation=0.2,
        trees=100,
        xgb_max_depth=10,
        kmeans_clusters=5,
    )
    print(f"training a synthetic {args.dimension}-d bundle on {args.samples} vectors ...", flush=True)
    build_synthetic_bundle(workdir / "bundle", spec)
    return workdir / "bundle", True


def embeddings(bundle: LoadedBundle, count: int) -> NDArray[np.float32]:
    """Vectors distributed like the training data as far as the scaler knows it (mean, spread)."""
    rng = np.random.default_rng(0)
    dimension = bundle.manifest.dimension
    mean = np.asarray(getattr(bundle.scaler, "mean_", np.zeros(dimension)))
    scale = np.asarray(getattr(bundle.scaler, "scale_", np.ones(dimension)))
    return (mean + scale * rng.normal(size=(count, dimension))).astype(np.float32)


def timed(call: Callable[[], Any], expected_size: int, size: Callable[[Any], int], seconds: float) -> Latency:
    """p50/p90 of ``call()`` after two untimed calls; a result of another ``size`` counts as unexpected."""
    call()
    call()
    return measure_latency(
        lambda _index: call(), lambda result: size(result) == expected_size, limit=CALL_LIMIT, seconds=seconds
    )


def bench_inprocess(bundle: LoadedBundle, x: NDArray[np.float32], seconds: float) -> Results:
    results: Results = {}
    for name in [*bundle.models, ALL]:
        names = list(bundle.models) if name == ALL else [name]
        results[name] = {}
        for size in (1, len(x)):
            call = partial(bundle.predict, x[:size], names)
            results[name][f"inprocess_{size}"] = timed(call, len(names), len, seconds)
    return results


def service_command() -> list[str]:
    """``hemascope serve classifier``."""
    return [*hemascope_command(), "serve", "classifier"]


def request(bundle: LoadedBundle, x: NDArray[np.float32], names: list[str]) -> classifier_pb2.ClassifyRequest:
    manifest = bundle.manifest
    items = [
        common_pb2.Embedding(
            values=row.tolist(),
            dimension=manifest.dimension,
            backbone=manifest.backbone,
            weights_hash=manifest.weights_hash,
            preprocessing=manifest.preprocessing,
        )
        for row in x
    ]
    return classifier_pb2.ClassifyRequest(embeddings=items, models=names)


def bench_service(
    server: ServerProcess, bundle: LoadedBundle, x: NDArray[np.float32], seconds: float
) -> Results:
    channel = open_channel(server.address, private=True)
    stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
    results: Results = {}
    try:
        for name in [*bundle.models, ALL]:
            names = [] if name == ALL else [name]
            results[name] = {}
            for size in (1, len(x)):
                call = partial(stub.Classify, request(bundle, x[:size], names), timeout=60)
                results[name][f"service_{size}"] = timed(call, size, _result_count, seconds)
    finally:
        channel.close()
    return results


def _result_count(response: classifier_pb2.ClassifyResponse) -> int:
    return len(response.results)


def run_service(path: Path, bundle: LoadedBundle, x: NDArray[np.float32], args: Any, workdir: Path) -> Any:
    env = dict(os.environ)
    env |= {
        "HEMASCOPE_CLASSIFIER_BUNDLE": str(path),
        "HEMASCOPE_CLASSIFIER_PORT": "0",
        "HEMASCOPE_CLASSIFIER_METRICS_PORT": "0",
        "HEMASCOPE_CLASSIFIER_LOG_LEVEL": "WARNING",
        "HEMASCOPE_CLASSIFIER_MAX_EMBEDDINGS": str(max(1024, args.batch)),
        "HEMASCOPE_CLASSIFIER_MODEL_THREADS": str(args.model_threads),
    }
    with start_service(service_command(), env, workdir / "classifier.log") as server:
        before = cpu_snapshot(server.proc.pid)
        results = bench_service(server, bundle, x, args.seconds)
        return results, cpu_usage(before, cpu_snapshot(server.proc.pid))


def print_table(results: Results, batch: int, cpu: dict[str, CpuUsage]) -> None:
    head = f"{'model':<22}{'':>4}{'in-process':>12}{'service':>10}{'added':>9}{'ratio':>7}"
    print(f"{head}   (p50 ms; p90 in the JSON)")
    for name, row in results.items():
        for size in (1, batch):
            inproc, service = row[f"inprocess_{size}"].p50_ms, row[f"service_{size}"].p50_ms
            label = name if size == 1 else ""
            print(
                f"{label:<22}{size:>4}{inproc:>12.3f}{service:>10.3f}{service - inproc:>9.3f}"
                f"{service / max(inproc, 1e-9):>7.2f}"
            )
    for phase, usage in cpu.items():
        print(
            f"CPU during {phase}: bench {usage.own_pct}%, service {usage.server_pct}%, "
            f"foreign {usage.foreign_pct}%, steal {usage.steal_pct}%"
        )
    worst = max(usage.foreign_pct for usage in cpu.values())
    if worst > DISTURBED_FOREIGN_PCT:
        print(disturbed_warning(worst))


def summary(results: Results, bundle: LoadedBundle, synthetic: bool, args: Any, extra: dict[str, Any]) -> Any:
    manifest = bundle.manifest
    models = {
        name: {
            **{key: {"p50_ms": v.p50_ms, "p90_ms": v.p90_ms, "calls": v.calls} for key, v in row.items()},
            "added_1_ms": round(row["service_1"].p50_ms - row["inprocess_1"].p50_ms, 3),
            f"added_{args.batch}_ms": round(
                row[f"service_{args.batch}"].p50_ms - row[f"inprocess_{args.batch}"].p50_ms, 3
            ),
        }
        for name, row in results.items()
    }
    bundle_info = {
        "version": manifest.bundle_version,
        "dimension": manifest.dimension,
        "synthetic": synthetic,
    }
    run = {"batch": args.batch, "model_threads": args.model_threads, "seconds": args.seconds}
    return {"benchmark": "classifier", "bundle": bundle_info, **run, "models": models, **extra}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="hemascope-bench-") as tmp:
        path, synthetic = prepare_bundle(args, Path(tmp))
        bundle = load_bundle(path)
        set_model_threads(bundle, args.model_threads)
        x = embeddings(bundle, args.batch)
        before = cpu_snapshot()
        results = bench_inprocess(bundle, x, args.seconds)
        cpu = {"in-process": cpu_usage(before, cpu_snapshot())}
        service, cpu["service"] = run_service(path, bundle, x, args, Path(tmp))
    for name, row in service.items():
        results[name].update(row)
    print_table(results, args.batch, cpu)
    print(machine_line(machine))
    extra = {"cpu": {k: vars(v) for k, v in cpu.items()}, "machine": machine_at_end(machine)}
    print(json.dumps(summary(results, bundle, synthetic, args, extra)), flush=True)


if __name__ == "__main__":
    main()
