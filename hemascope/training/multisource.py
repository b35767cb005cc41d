"""What a multi-source run needs before any model: the labelled image list with sites, the grouping unit,
the (class, site) strata and the grouped split of the training images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hemascope.datasets import CLASSES
from hemascope.training.duplicates import DuplicateReport, find_duplicates
from hemascope.training.groups import merge_groups, strata
from hemascope.training.sources import DatasetSpec, SourcedSet, scan_sources
from hemascope.training.split import Split, grouped_split

IntArray = NDArray[np.int64]


@dataclass
class SourcedData:
    """Every image of a spec (training and evaluation-only), in scan order, with what splits need."""

    scan: SourcedSet
    y: IntArray
    groups: IntArray
    duplicates: DuplicateReport

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.scan.records]

    @property
    def sites(self) -> list[str]:
        return [r.site for r in self.scan.records]

    @property
    def training(self) -> NDArray[np.bool_]:
        return np.array([r.role == "train" for r in self.scan.records], dtype=np.bool_)

    @property
    def train_rows(self) -> IntArray:
        """Indices of the training-role images (the rows a split divides)."""
        return np.flatnonzero(self.training).astype(np.int64)

    @property
    def evaluation_rows(self) -> IntArray:
        return np.flatnonzero(~self.training).astype(np.int64)

    def strata(self, rows: IntArray) -> IntArray:
        return strata(self.y[rows], [self.sites[i] for i in rows])

    def split(self, seed: int = 50) -> Split:
        """The grouped split of the training rows (indices *into* :attr:`train_rows`), stratified by class
        and site: the same for every command run with the same spec and seed."""
        rows = self.train_rows
        return grouped_split(self.strata(rows), self.groups[rows], seed=seed)


def load_sourced(
    specs: Sequence[DatasetSpec],
    *,
    duplicates: DuplicateReport | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SourcedData:
    """Scans the datasets, finds duplicates across all of them (unless given, in scan order) and merges
    them with patients into groups."""
    scan = scan_sources(specs, CLASSES)
    paths = [r.path for r in scan.records]
    if duplicates is None or len(duplicates.group_of) != len(paths):
        if log is not None:
            log(f"{len(paths)} images from the sites {', '.join(scan.sites)}; finding duplicates")
        duplicates = find_duplicates(paths, progress=progress)
    y = np.asarray([CLASSES.index(r.label) for r in scan.records], dtype=np.int64)
    groups = merge_groups([r.patient for r in scan.records], duplicates.group_of.astype(np.int64))
    return SourcedData(scan, y, groups, duplicates)
