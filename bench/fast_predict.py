"""One-vector prediction cost per model: the libraries' own calls against hemascope.bundle.fast, in one run.

Run: ``PYTHONPATH=. .venv/bin/python bench/fast_predict.py [--rounds R] [--bundle DIR]``.

Loads the bundle twice (as the classifier serves it, model threads 1): once plain and once with
:meth:`~hemascope.bundle.LoadedBundle.with_fast_paths`. Each round times, for one embedding spread like the
training set, the scaler and every model's calibrated ``proba`` on both, interleaved (library, fast,
library, ...), so load on the machine hits both alike; and the whole ``ClassifierCore.classify`` of that
embedding with ``fast_predict`` off and on. Prints p50/p90 per item and the ratio; checks on the way that
both give the same numbers (bit for bit). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.stats import percentiles

from hemascope.bundle import load_bundle
from hemascope.data import REPO_ROOT
from services.classifier.core import ClassifierCore, set_model_threads
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="timed calls per item and path")
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    return parser.parse_args(argv)


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    plain = load_bundle(args.bundle)
    set_model_threads(plain, 1)
    fast = plain.with_fast_paths()
    rng = np.random.default_rng(0)
    vector = plain.scaler.mean_ + rng.normal(size=plain.manifest.dimension) * plain.scaler.scale_
    row = vector[None, :]
    scaled = plain.scale(row)
    items: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "scaler": (lambda: plain.scale(row), lambda: fast.scale(row))
    }
    for name in plain.models:
        items[name] = (partial(plain.models[name].proba, scaled), partial(fast.models[name].proba, scaled))
    # Keyword dicts: the other fields come from defaults and the environment, as in the service.
    settings: list[dict[str, Any]] = [
        {"bundle": args.bundle, "metrics_port": None, "fast_predict": flag} for flag in (False, True)
    ]
    cores = [ClassifierCore(ClassifierSettings(**fields)) for fields in settings]
    for core in cores:
        core.load()
    embedding = [EmbeddingInput(vector.astype(np.float32), plain.manifest.dimension)]
    items["ClassifierCore.classify (5 models)"] = (
        lambda: cores[0].classify(embedding),
        lambda: cores[1].classify(embedding),
    )
    for name, (library, ours) in items.items():
        a, b = library(), ours()
        if isinstance(a, np.ndarray) and not np.array_equal(a, b):
            raise SystemExit(f"{name}: the fast path's answer differs from the library's")
    results: dict[str, dict[str, float]] = {}
    print(f"{'':<36}{'library p50':>12}{'p90':>8}{'fast p50':>10}{'p90':>8}{'x faster':>10}")
    for name, (library, ours) in items.items():
        slow_ms: list[float] = []
        fast_ms: list[float] = []
        for _ in range(args.rounds):
            slow_ms.append(timed(library))
            fast_ms.append(timed(ours))
        slow50, slow90 = percentiles(slow_ms, [50, 90], 3)
        fast50, fast90 = percentiles(fast_ms, [50, 90], 3)
        ratio = slow50 / fast50 if fast50 else float("nan")
        results[name] = {
            "library_p50_ms": slow50,
            "library_p90_ms": slow90,
            "fast_p50_ms": fast50,
            "fast_p90_ms": fast90,
        }
        print(f"{name:<36}{slow50:>12.3f}{slow90:>8.3f}{fast50:>10.3f}{fast90:>8.3f}{ratio:>10.1f}")
    for core in cores:
        core.close()
    print(machine_line(machine))
    summary = {"benchmark": "fast_predict", "rounds": args.rounds, "items": results}
    summary["machine"] = machine_at_end(machine)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
