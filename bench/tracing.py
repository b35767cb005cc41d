"""Tracing overhead: the classifier core's Classify (every model of the committed bundle, one embedding)
with tracing off, on and sampled out, in one run, plus the cost of one step span alone.

    .venv/bin/python bench/tracing.py [--calls N] [--repeats R]

Off is the default (OpenTelemetry's no-op tracer, no exporter); "on" records every span into a
BatchSpanProcessor whose exporter drops them (so the figure is the SDK's cost, not a collector's); "ratio 0"
is on with a sample ratio of 0 (spans made but not recorded). Each mode runs R times interleaved, and the
best run of each is kept. Other processes share the CPU: compare the ratios, not the microseconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hemascope.data import REPO_ROOT
from hemascope.tracing import Tracing, TracingConfig, setup_tracing, step
from services.classifier.core import ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


class _Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _best(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    modes: dict[str, Tracing] = {
        "off": setup_tracing(TracingConfig(None, "classifier")),
        "on": setup_tracing(TracingConfig(None, "classifier"), exporter=_Dropping()),
        "ratio 0": setup_tracing(TracingConfig(None, "classifier", 0.0), exporter=_Dropping()),
    }
    fields: dict[str, object] = {"bundle": BUNDLE, "model_threads": 1, "watch_interval_s": 0}
    cores = {}
    for name, tracing in modes.items():
        core = ClassifierCore(ClassifierSettings(**fields), tracer=tracing.tracer)  # type: ignore[arg-type]
        core.load()
        cores[name] = core
    dimension = cores["off"].served.manifest.dimension
    values = np.random.default_rng(0).normal(size=dimension).astype(np.float32)
    embeddings = [EmbeddingInput(values)]
    best: dict[str, float] = {name: float("inf") for name in modes}
    for _ in range(args.repeats):
        for name, core in cores.items():
            best[name] = min(best[name], _best(partial(core.classify, embeddings), args.calls))
    steps: dict[str, float] = {}
    for name, tracing in modes.items():

        def one(tracer: trace.Tracer = tracing.tracer) -> None:
            with step(tracer, "bench", model="svm"):
                pass

        steps[name] = min(_best(one, 10_000) for _ in range(args.repeats))
    for tracing in modes.values():
        tracing.shutdown()
    for core in cores.values():
        core.close()
    models = len(cores["off"].served.bundle.models)
    print(
        f"Classify, {models} models, one embedding (shared machine; best of {args.repeats} x {args.calls}):"
    )
    for name in modes:
        print(
            f"  {name:8s} {best[name] * 1e6:9.1f} us/call  ratio to off {best[name] / best['off']:.3f}   "
            f"one step span {steps[name] * 1e6:6.2f} us"
        )
    print(json.dumps({"classify_s": best, "step_s": steps, "models": models}))


if __name__ == "__main__":
    main()
