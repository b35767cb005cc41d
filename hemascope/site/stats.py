"""Confidence intervals for a site's validation: Wilson score intervals for counts, and a cluster bootstrap
when cells are grouped by patient.

Cells of one patient share a slide, a stain and often a disease, so they are not independent draws: a
proportion measured on 300 cells of 10 patients is far less certain than the count suggests. When the data
names patients, every interval comes from a bootstrap that resamples whole patients (with replacement) and
keeps all their cells together. With few patients the bootstrap can understate uncertainty (when every
resampled patient is perfect it returns a zero-width interval), so a proportion's interval is never
narrower than its Wilson interval: it spans both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054
LEVEL = 0.95
WILSON = "wilson"
CLUSTER = "cluster bootstrap (patients), at least Wilson"
BOOT_CELLS = "bootstrap (cells)"
BOOT_PATIENTS = "cluster bootstrap (patients)"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval; ``k``/``n`` for proportions. ``value`` is ``None`` when the
    data cannot measure it (no cells to count)."""

    value: float | None
    low: float | None
    high: float | None
    method: str
    k: int | None = None
    n: int | None = None

    def bound(self, which: str) -> float | None:
        """``point``, ``lower`` or ``upper``."""
        return {"point": self.value, "lower": self.low, "upper": self.high}[which]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "low": self.low, "high": self.high, "method": self.method}
        if self.n is not None:
            out |= {"k": self.k, "n": self.n}
        return out


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``n`` > 0)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends where rounding would leave 1e-16
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Resampler:
    """Bootstrap replicates over clusters (patients, or single cells when none are named).

    ``counts[b, c]`` is how many times cluster ``c`` is drawn in replicate ``b``; the same replicates serve
    every statistic and every model of a run, so results are paired and reproducible from ``seed``.
    """

    cluster: IntArray  # per cell: its cluster index
    counts: IntArray  # replicates x clusters
    grouped: bool  # clusters are patients (else every cell is its own cluster)
    seed: int

    @staticmethod
    def create(groups: Sequence[str], replicates: int, seed: int) -> Resampler:
        """``groups``: per cell its patient, or ``""`` (the cell is its own cluster)."""
        if replicates < 1:
            raise ValueError("replicates must be at least 1")
        keys = [g if g else f"\0cell{i}" for i, g in enumerate(groups)]
        index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        cluster = np.asarray([index[k] for k in keys], dtype=np.int64)
        n_clusters = len(index)
        rng = np.random.default_rng(seed)
        counts = (
            rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=replicates).astype(np.int64)
            if n_clusters
            else np.zeros((replicates, 0), dtype=np.int64)
        )
        return Resampler(cluster, counts, any(groups), seed)

    @property
    def replicates(self) -> int:
        return int(self.counts.shape[0])

    @property
    def clusters(self) -> int:
        return int(self.counts.shape[1])

    def ratios(self, success: BoolArray, within: BoolArray) -> FloatArray:
        """Per replicate: resampled successes / resampled cells among ``within`` (NaN when none)."""
        k = np.bincount(self.cluster, weights=(success & within).astype(np.float64), minlength=self.clusters)
        n = np.bincount(self.cluster, weights=within.astype(np.float64), minlength=self.clusters)
        top = self.counts @ k
        bottom = self.counts @ n
        out: FloatArray = np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom > 0)
        return out

    def indices(self, replicate: int) -> IntArray:
        """The cells of one replicate (a cell appears as often as its cluster was drawn)."""
        weights = self.counts[replicate][self.cluster]
        out: IntArray = np.repeat(np.arange(len(self.cluster), dtype=np.int64), weights)
        return out


def _percentiles(samples: FloatArray) -> tuple[float, float] | None:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return None
    low, high = np.quantile(finite, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def proportion(success: BoolArray, within: BoolArray, resampler: Resampler) -> Estimate:
    """The fraction of ``within`` cells that are ``success``: Wilson interval, or (grouped by patient) the
    span of the patient bootstrap's percentile interval and the Wilson interval."""
    n = int(within.sum())
    k = int((success & within).sum())
    method = CLUSTER if resampler.grouped else WILSON
    if n == 0:
        return Estimate(None, None, None, method, k, n)
    low, high = wilson(k, n)
    if resampler.grouped:
        boot = _percentiles(resampler.ratios(success, within))
        if boot is not None:
            low, high = min(low, boot[0]), max(high, boot[1])
    return Estimate(k / n, low, high, method, k, n)


def bootstrap(statistic: Callable[[IntArray], float | None], resampler: Resampler, n_cells: int) -> Estimate:
    """A statistic of the cells (given their indices, repeats allowed) with a percentile interval over the
    resampler's replicates (never excluding the statistic's own value); replicates where it is undefined
    are skipped."""
    value = statistic(np.arange(n_cells, dtype=np.int64))
    method = BOOT_PATIENTS if resampler.grouped else BOOT_CELLS
    if value is None:
        return Estimate(None, None, None, method)
    samples = []
    for b in range(resampler.replicates):
        sample = statistic(resampler.indices(b))
        samples.append(np.nan if sample is None else sample)
    interval = _percentiles(np.asarray(samples, dtype=np.float64))
    if interval is None:
        return Estimate(value, None, None, method)
    # a percentile interval can miss the value of a skewed statistic near its limit (an AUC near 1):
    # it is widened to include it
    return Estimate(value, min(interval[0], value), max(interval[1], value), method)


def threshold_for_sensitivity(truth: BoolArray, score: FloatArray, target: float) -> dict[str, Any] | None:
    """The highest score threshold at which calling ``score >= threshold`` finds at least ``target`` of the
    true cells, with the sensitivity and specificity it reaches on these same cells (so optimistic: the
    threshold was chosen on them). ``None`` without true cells."""
    positives = np.sort(score[truth])[::-1]
    if not len(positives):
        return None
    needed = min(len(positives), max(1, math.ceil(target * len(positives) - 1e-9)))
    threshold = float(positives[needed - 1])
    negatives = score[~truth]
    return {
        "target_sensitivity": target,
        "threshold": threshold,
        "sensitivity": float((score[truth] >= threshold).mean()),
        "specificity": float((negatives < threshold).mean()) if len(negatives) else None,
    }
