"""Percentiles and timing: sequential latency of a service call, median time of in-process work."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

R = TypeVar("R")

MIN_LATENCY_SAMPLES = 10


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    calls: int  # the samples behind the percentiles
    unexpected: int  # calls whose response was not the kind measured (e.g. a cache hit when timing misses)


def percentiles(samples: Sequence[float], quantiles: Sequence[float], digits: int = 2) -> list[float]:
    """``quantiles`` (0-100) of ``samples``, rounded; NaN for each when there are no samples."""
    if not samples:
        return [float("nan")] * len(quantiles)
    return [round(float(value), digits) for value in np.percentile(samples, quantiles)]


def measure_latency(
    call: Callable[[int], R],
    expected: Callable[[R], bool],
    *,
    limit: int,
    seconds: float,
) -> Latency:
    """Sequential calls ``call(0)``, ``call(1)``, ... for ``seconds`` (at most ``limit``; at least until
    ``MIN_LATENCY_SAMPLES`` samples), timing each; responses failing ``expected`` are counted, not timed."""
    samples: list[float] = []
    calls = unexpected = 0
    deadline = time.perf_counter() + seconds
    while calls < limit and (time.perf_counter() < deadline or len(samples) < MIN_LATENCY_SAMPLES):
        started = time.perf_counter()
        response = call(calls)
        ms = 1000 * (time.perf_counter() - started)
        calls += 1
        if expected(response):
            samples.append(ms)
        else:
            unexpected += 1
    p50, p90 = percentiles(samples, [50, 90])
    return Latency(p50, p90, len(samples), unexpected)


def median_ms(fn: Callable[[], object], iterations: int) -> float:
    """Median wall time of ``fn()`` in ms over ``iterations`` runs, after one untimed run."""
    fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return round(1000 * float(np.median(samples)), 4)
