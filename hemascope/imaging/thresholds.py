"""Histogram thresholds (Otsu, two- and three-class) on 1-D samples, in NumPy."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _histogram(values: NDArray[np.floating], bins: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return counts.astype(np.float64) / max(int(counts.sum()), 1), centres.astype(np.float64)


def otsu(values: NDArray[np.floating], bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance (``values > t`` is the upper class)."""
    p, c = _histogram(values, bins)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * c)
    mt = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    return float(c[int(np.argmax(between))])


def otsu3(values: NDArray[np.floating], bins: int = 64) -> tuple[float, float]:
    """Three-class Otsu: ``(low, high)`` maximising the between-class variance of the three classes.

    Class 0 is ``v <= low``, class 1 ``low < v <= high``, class 2 ``v > high``. Exhaustive over the
    ``bins x bins`` pairs of histogram cuts, vectorised.
    """
    p, c = _histogram(values, bins)
    cum_p = np.concatenate([[0.0], np.cumsum(p)])
    cum_m = np.concatenate([[0.0], np.cumsum(p * c)])
    mt = cum_m[-1]
    i = np.arange(1, bins)[:, None]  # class 0 = bins [0, i)
    j = np.arange(1, bins)[None, :]  # class 1 = bins [i, j), class 2 = [j, bins)
    w0, w1, w2 = cum_p[i], cum_p[j] - cum_p[i], 1.0 - cum_p[j]
    m0, m1, m2 = cum_m[i], cum_m[j] - cum_m[i], mt - cum_m[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = m0**2 / w0 + m1**2 / w1 + m2**2 / w2
    valid = (j > i) & (w0 > 0) & (w1 > 0) & (w2 > 0)
    score = np.where(valid & np.isfinite(score), score, -np.inf)
    if not np.isfinite(score).any():
        mid = float(c[bins // 2])
        return mid, mid
    a, b = np.unravel_index(int(np.argmax(score)), score.shape)
    # bin index k is the first of the upper class: the cut sits at the centre of bin k - 1.
    return float(c[int(i[a, 0]) - 1]), float(c[int(j[0, b]) - 1])
