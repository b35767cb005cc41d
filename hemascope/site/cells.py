"""A laboratory's labelled cells as the bundle sees them: class indices, bundle-scaled embeddings and
patients (``""`` where the data names none), embedded with the bundle's own backbone and preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle
from hemascope.site.validate import check_folders
from hemascope.training.evaluate import embed_scan
from hemascope.training.sources import DatasetSpec, SourcedSet, scan_sources


@dataclass(frozen=True)
class SiteCells:
    scan: SourcedSet
    y: NDArray[np.int64]
    scaled: NDArray[np.float64]
    patients: list[str]


def site_cells(
    bundle: LoadedBundle, specs: Sequence[DatasetSpec], *, address: str | None = None, progress: bool = True
) -> SiteCells:
    """Scans (refusing folders that are not classes of the bundle) and embeds the cells."""
    classes = tuple(bundle.manifest.classes)
    scan = scan_sources(specs, classes)
    check_folders(scan, classes)
    y, scaled = embed_scan(bundle, scan, address=address, progress=progress)
    return SiteCells(scan, y, scaled, [r.patient for r in scan.records])
