"""Gateway benchmark: the in-process pipeline against Analyze through the gateway, in one run.

Run: ``.venv/bin/python bench/gateway.py [--seconds S] [--warmup W] [--clients 1,4,16] [--variants ...]``.

1. **in-process pipeline** -- ``FeatureCore.embed`` (cache skipped) + ``ClassifierCore.classify`` (every
   model) in this process: no gRPC, no gateway. The baseline.
2. **gateway** -- ``hemascope up``'s processes (feature, classifier, detector, explain, gateway; default
   backbone, the committed bundle and detector, in-process caches) and ``hemascope.client.HemascopeClient``
   calling ``Analyze``, one client (own channel) per thread, for: classify only, + explain, + detect,
   full (classify + detect + explain); each with the cache **cold** (every call a real JPEG never seen
   before, so no embedding or explanation is cached) and **warm** (16 images analysed once before, cycled).

Each phase runs 1, 4 and 16 clients back to back for ``--seconds`` after ``--warmup``; the calls ending
inside the window give p50/p90 latency and throughput. Calls whose answer is not the kind measured (a
cache hit in a cold phase) are counted, not timed; a failed part is an error. Targets (2-core
machine, default backbone): gateway classify-only p50 <= 1.25x the in-process pipeline's (1 client, cold);
warm classify-only p50 <= 10 ms; full analysis p50 <= 500 ms (1 client, cold). CPU shares per phase: bench =
this process (clients), stack = the five service processes, foreign = everything else (>10%: disturbed).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib.cpu import DISTURBED_FOREIGN_PCT
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.table import disturbed_warning
from gateway_load import ImagePool, Phase, Work, gateway_work, run_phase, run_stack, stage_medians

from hemascope.data import REPO_ROOT, shared_data_dir
from hemascope.imaging.inputs import ImageInput
from hemascope.v1 import analysis_pb2
from services.classifier.core import ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.feature.core import FeatureCore
from services.feature.settings import FeatureSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WARM_IMAGES = 16
VARIANTS: dict[str, dict[str, Any]] = {
    "classify": {},
    "classify+explain": {"explain": True},
    "classify+detect": {"detect": True},
    "full": {"detect": True, "explain": True},
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--clients", default="1,4,16", help="client counts, comma-separated")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"gateway variants to measure, comma-separated, of {', '.join(VARIANTS)} (default: all)",
    )
    return parser.parse_args(argv)


def load_images() -> list[bytes]:
    """Every real JPEG of the 5-class set (train and val), round-robin over the classes."""
    root = shared_data_dir() / "bloodcells-5class"
    if not root.is_dir():
        raise SystemExit(f"dataset not found at {root}; set HEMASCOPE_DATA_DIR")
    groups = [
        sorted(folder.glob("*.jpg"))
        for split in ("val", "train")
        for folder in sorted((root / split).iterdir())
    ]
    ordered = [path for row in itertools.zip_longest(*groups) for path in row if path is not None]
    return [path.read_bytes() for path in ordered]


def inprocess_work(bundle: Path, images: ImagePool) -> tuple[Callable[[], Work], Callable[[], None]]:
    """The pipeline without gRPC: embed (cache skipped: always computed) then classify with every model.

    Every call takes an image never seen before, as the gateway's cold phase does: the feature core
    remembers the input check's verdict per image, so a repeat would skip that check and make the baseline
    cheaper than the work the gateway is timed on."""
    feature_overrides: dict[str, Any] = {"memory_cache_entries": 0, "metrics_port": None}
    classifier_overrides: dict[str, Any] = {"bundle": bundle, "metrics_port": None}
    # Keyword dicts: the other fields come from defaults and the environment, as in the services.
    feature = FeatureCore(FeatureSettings(**feature_overrides))
    classifier = ClassifierCore(ClassifierSettings(**classifier_overrides))
    feature.load()
    classifier.load()
    info = feature.info

    def make() -> Work:
        def work() -> bool:
            data = images.fresh()
            vector = feature.embed(ImageInput(data), skip_cache=True).vector
            embedding = EmbeddingInput(
                vector, len(vector), info.spec.name, info.weights_hash, info.preprocessing.version
            )
            return len(classifier.classify([embedding]).outputs) > 0

        return work

    def close() -> None:
        feature.close()
        classifier.close()

    return make, close


def print_phases(title: str, phases: Sequence[Phase]) -> None:
    print(f"\n{title}")
    print(
        f"  {'':<28}{'clients':>7}{'p50 ms':>9}{'p90 ms':>9}{'/s':>8}{'calls':>7}{'skip':>5}{'err':>5}"
        f"{'bench%':>8}{'stack%':>8}{'foreign%':>9}"
    )
    for phase in phases:
        cpu = phase.cpu
        assert cpu is not None
        print(
            f"  {phase.label:<28}{phase.clients:>7}{phase.p50_ms:>9.1f}{phase.p90_ms:>9.1f}"
            f"{phase.per_s:>8.1f}{len(phase.samples):>7}{phase.unexpected:>5}{phase.errors:>5}"
            f"{cpu.own_pct:>8.1f}{cpu.server_pct:>8.1f}{cpu.foreign_pct:>9.1f}"
        )
        if phase.first_error:
            print(f"      first error: {phase.first_error[:200]}")


def report_targets(phases: dict[str, list[Phase]]) -> tuple[float, dict[str, bool]]:
    """Prints the three targets (a variant not measured is a target not met); the cold classify ratio and
    the targets' verdicts."""
    base = phases["in-process pipeline"][0].p50_ms
    one = {key: group[0] for key, group in phases.items() if group[0].clients == 1}
    nan = float("nan")
    cold = one["gateway classify cold"].p50_ms if "gateway classify cold" in one else nan
    warm_p50 = one["gateway classify warm"].p50_ms if "gateway classify warm" in one else nan
    full = one["gateway full cold"].p50_ms if "gateway full cold" in one else nan
    ratio = cold / base if base else nan
    targets = {  # a variant not measured is a target not met
        "classify_p50_within_1.25x_inprocess": ratio <= 1.25,
        "warm_classify_p50_le_10ms": warm_p50 <= 10.0,
        "full_cold_p50_le_500ms": full <= 500.0,
    }
    print(
        f"\ngateway classify-only / in-process pipeline, p50, 1 client, cold: {ratio:.2f}x (target <= 1.25x)"
    )
    print(f"gateway classify-only warm p50, 1 client: {warm_p50:.1f} ms (target <= 10)")
    print(f"gateway full analysis cold p50, 1 client: {full:.1f} ms (target <= 500)")
    return ratio, targets


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    clients = [int(n) for n in args.clients.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    machine = machine_info()
    images = load_images()
    warm = images[:WARM_IMAGES]
    pool = ImagePool(images[WARM_IMAGES:])
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    phases: dict[str, list[Phase]] = {}
    stages: dict[str, list[dict[str, float]]] = {}  # the gateway's stage timings, every call of a phase

    def measure(key: str, make: Callable[[], Work], pids: Sequence[int]) -> None:
        phases[key] = [run_phase(key, make, n, args.warmup, args.seconds, pids) for n in clients]

    with run_stack(args.bundle, workdir / "stack.log", {}) as (address, pids):
        # Its own never-seen images (the gateway's processes keep their own memories, so the cold pool may
        # hand out the same ones later).
        make, close = inprocess_work(args.bundle, ImagePool(images[WARM_IMAGES:]))
        try:
            measure("in-process pipeline", make, pids)
        finally:
            close()
        for variant in variants:
            fields = VARIANTS[variant]
            options = analysis_pb2.AnalyzeOptions(**fields)
            cold_stages = stages[f"gateway {variant} cold"] = []
            measure(
                f"gateway {variant} cold",
                gateway_work(address, options, pool.fresh, cold=True, stages=cold_stages),
                pids,
            )
            cycle = itertools.cycle(warm)
            lock = threading.Lock()

            def next_warm(cycle: Any = cycle, lock: threading.Lock = lock) -> bytes:
                with lock:
                    return bytes(next(cycle))

            prime = gateway_work(address, options, next_warm, cold=False)()
            for _ in warm:  # analyse each warm image once, so its embedding and explanation are cached
                prime()
            warm_stages = stages[f"gateway {variant} warm"] = []
            measure(
                f"gateway {variant} warm",
                gateway_work(address, options, next_warm, cold=False, stages=warm_stages),
                pids,
            )

    print_phases(
        f"latency and throughput ({args.seconds:.0f} s per phase, {args.warmup:.0f} s warm-up)",
        [phase for group in phases.values() for phase in group],
    )
    ratio, targets = report_targets(phases)
    print(f"targets: {targets}; cold images used: {pool.used}")
    medians = {key: stage_medians(timings) for key, timings in stages.items()}
    print("gateway stage medians (ms, all calls of each phase, as the gateway reports them):")
    for key, values in medians.items():
        print(f"  {key:<32}" + "  ".join(f"{name} {ms:.1f}" for name, ms in values.items()))
    foreign = max(phase.cpu.foreign_pct for group in phases.values() for phase in group if phase.cpu)
    if foreign > DISTURBED_FOREIGN_PCT:
        print(disturbed_warning(foreign))
    print(machine_line(machine))
    summary = {
        "benchmark": "gateway",
        "seconds": args.seconds,
        "warmup": args.warmup,
        "phases": {key: [phase.record() for phase in group] for key, group in phases.items()},
        "ratio_classify_cold_vs_inprocess_p50": round(ratio, 3),
        "targets": targets,
        "cold_images_used": pool.used,
        "gateway_stage_medians_ms": medians,
        "foreign_pct_max": foreign,
        "machine": machine_at_end(machine),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
