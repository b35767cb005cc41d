"""The unit of every split: patients and duplicates merged into one group id per image.

Two images share a group when they come from the same patient (datasets that name patients) or are
byte-identical or near-duplicate copies (any dataset, across datasets too); groups are the connected
components of those links, so a patient or a duplicate never lies on both sides of a split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

IntArray = NDArray[np.int64]


def merge_groups(patients: Sequence[str], duplicate_groups: IntArray) -> IntArray:
    """Group id per image: components of "same non-empty patient" and "same duplicate group" links."""
    n = len(patients)
    if len(duplicate_groups) != n:
        raise ValueError(f"{n} patients but {len(duplicate_groups)} duplicate group ids")
    src: list[int] = []
    dst: list[int] = []
    for keys in (list(patients), [str(g) for g in duplicate_groups.tolist()]):
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key == "":
                continue
            if key in first:
                src.append(first[key])
                dst.append(index)
            else:
                first[key] = index
    graph = coo_matrix((np.ones(len(src)), (np.array(src, np.intp), np.array(dst, np.intp))), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    out: IntArray = np.asarray(labels, dtype=np.int64)
    return out


def strata(labels: IntArray, sites: Sequence[str]) -> IntArray:
    """One stratum per (class, site) pair, so splits keep every site's class mix."""
    keys = [f"{int(y)}|{s}" for y, s in zip(labels.tolist(), sites, strict=True)]
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    return np.array([index[k] for k in keys], dtype=np.int64)
