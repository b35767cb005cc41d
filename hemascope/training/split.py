"""Splits as in the study (stratified 80/20, seed 50), grouped so duplicates never straddle a split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    train: IntArray  # the study's 80 %
    test: IntArray  # the held-out 20 %
    fit: IntArray  # part of train the final models are fitted on
    calib: IntArray  # part of train the calibration and abstain threshold are fitted on


def _first_fold(y: IntArray, groups: IntArray, n_splits: int, seed: int) -> tuple[IntArray, IntArray]:
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    a, b = next(splitter.split(np.zeros(len(y)), y, groups))
    return a.astype(np.int64), b.astype(np.int64)


def grouped_split(y: IntArray, groups: IntArray, *, seed: int = 50, calib_fraction: float = 0.1) -> Split:
    """Stratified, grouped 80/20 split; then a grouped calibration part out of the 80 %."""
    train, test = _first_fold(y, groups, 5, seed)
    fit_rel, calib_rel = _first_fold(y[train], groups[train], round(1 / calib_fraction), seed)
    return Split(train=train, test=test, fit=train[fit_rel], calib=train[calib_rel])


def grouped_folds(y: IntArray, groups: IntArray, k: int, seed: int) -> Iterator[tuple[IntArray, IntArray]]:
    """Stratified, grouped k-fold (for cross-validation on the training part)."""
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for a, b in splitter.split(np.zeros(len(y)), y, groups):
        yield a.astype(np.int64), b.astype(np.int64)
