"""Exact and near-duplicate images, including flipped and rotated copies.

* **Exact**: same SHA-256 of the file bytes.
* **Near**: 64-bit perceptual hash (:func:`imagehash.phash`) of an image and of its 8 dihedral transforms
  (identity, rotations by 90/180/270 degrees, left-right and top-bottom flips, transpose, transverse).
  ``A ~ B`` when ``min_T hamming(phash(A), phash(T(B))) <= threshold``.

The transforms are applied to the 32 x 32 greyscale thumbnail that phash computes first: flips and quarter
turns commute with Pillow's separable resampling, so this is phash of the transformed image up to a grey
level of rounding (0 or 2 bits of difference on the real data) at an eighth of the cost. Distances are
computed with numpy (XOR + ``np.bitwise_count``) in chunks; only one member of each byte-identical group
takes part in the near search, so ``near_pairs`` never repeats what ``exact_groups`` already says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hemascope.errors import InvalidImage
from hemascope.imaging.decode import decode_image

HashArray = NDArray[np.uint64]
T = TypeVar("T")

#: Default hamming threshold on the 64-bit phash, minimised over the 8 dihedral transforms.
#:
#: Chosen from the distance histogram of ``bloodcells-5class`` (4000 images, all 8M pairs, byte-identical
#: copies left out): 2 bits: 1 pair (the same monocyte twice, shifted by ~2 px), 4 bits: none, 6 bits: 21
#: pairs, 8 bits: 227, 10 bits: 1698, 12 bits: 10779. Every pair at 6 bits or more is two distinct cells
#: (best dihedral pixel correlation <= 0.88 at 24 x 24; 6 of the 21 pairs are of different classes); at 6
#: bits the largest merged component holds 6 images, at 8 bits 88, at 10 bits 802. Cell crops on a plain
#: background share their low-frequency structure, and the minimum over 8 transforms pulls the distances of
#: unrelated images down further, so the usual phash cut-offs (8-10) are far too loose here. phash splits
#: its 64 coefficients at their median, so distances are (almost always) even and 4 means the same as 5:
#: it sits in the empty gap between copies (0-2 bits) and distinct cells (>= 6 bits).
DEFAULT_THRESHOLD = 4

_TRANSFORMS: tuple[Image.Transpose | None, ...] = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
_CHUNK_ELEMENTS = 1 << 22  # uint64 XOR results held at once (32 MiB)


@dataclass(frozen=True, eq=False)
class DuplicateReport:
    exact_groups: list[list[int]]
    """Indices into the input list, groups of size >= 2 of byte-identical files."""
    near_pairs: list[tuple[int, int, int]]
    """``(i, j, hamming distance)``, ``i < j``, near-duplicates (flips/rotations included) that are not
    byte-identical; a byte-identical group is represented by its first member."""
    group_of: NDArray[np.int64]
    """Connected component id per image, merging exact and near duplicates; singletons get their own id."""
    threshold: int = DEFAULT_THRESHOLD
    """The hamming threshold used."""
    distance_counts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(65, np.int64))
    """Pairs per min-over-transforms hamming distance (0..64), over readable, not byte-identical images."""
    unreadable: list[int] = field(default_factory=list)
    """Images that could not be decoded: only byte-identical detection applies to them."""

    @property
    def merged_groups(self) -> int:
        """Number of components of size >= 2."""
        return int(np.count_nonzero(np.bincount(self.group_of) >= 2)) if len(self.group_of) else 0

    def components(self) -> list[list[int]]:
        """Members of every component of size >= 2, each sorted, ordered by first member."""
        members: dict[int, list[int]] = {}
        for index, group in enumerate(self.group_of.tolist()):
            members.setdefault(group, []).append(index)
        return sorted((m for m in members.values() if len(m) >= 2), key=lambda m: m[0])

    @property
    def largest_component(self) -> int:
        return int(np.bincount(self.group_of).max()) if len(self.group_of) else 0


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dihedral_phashes(pixels: NDArray[np.uint8]) -> HashArray:
    """The 8 phashes (uint64) of an H x W x 3 RGB image under the dihedral transforms, identity first."""
    thumb = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    bits = np.stack(
        [imagehash.phash(thumb if t is None else thumb.transpose(t)).hash.ravel() for t in _TRANSFORMS]
    )
    packed = np.packbits(bits.astype(np.uint8), axis=1)  # (8, 8) bytes, most significant bit first
    return packed.view(">u8").ravel().astype(np.uint64)


def _near(hashes: HashArray, threshold: int) -> tuple[list[tuple[int, int, int]], NDArray[np.int64]]:
    """Near pairs among the rows of ``hashes`` and the distance histogram, chunk by chunk."""
    n = len(hashes)
    counts = np.zeros(65, np.int64)
    pairs: list[tuple[int, int, int]] = []
    rows = max(1, _CHUNK_ELEMENTS // max(1, n * hashes.shape[1]))
    for start in range(0, max(0, n - 1), rows):
        stop = min(n, start + rows)
        dist = np.bitwise_count(hashes[start:stop, 0][:, None, None] ^ hashes[None, start:, :]).min(axis=2)
        upper = np.arange(start, n)[None, :] > np.arange(start, stop)[:, None]
        counts += np.bincount(dist[upper], minlength=65)
        ii, jj = np.nonzero(upper & (dist <= threshold))
        pairs += [(int(i) + start, int(j) + start, int(dist[i, j])) for i, j in zip(ii, jj, strict=True)]
    return pairs, counts


def duplicates_from_hashes(
    digests: Sequence[str],
    phashes: HashArray,
    readable: Sequence[bool],
    *,
    threshold: int = DEFAULT_THRESHOLD,
) -> DuplicateReport:
    """Build the report from per-image SHA-256 digests and (n, 8) dihedral phashes (rows of unreadable
    images are ignored)."""
    n = len(digests)
    by_digest: dict[str, list[int]] = {}
    for index, digest in enumerate(digests):
        by_digest.setdefault(digest, []).append(index)
    exact = sorted((g for g in by_digest.values() if len(g) >= 2), key=lambda g: g[0])
    reps = np.array([g[0] for g in by_digest.values() if readable[g[0]]], dtype=np.intp)
    reps.sort()
    local, counts = _near(phashes[reps], threshold)
    near = [(int(reps[i]), int(reps[j]), d) for i, j, d in local]
    edges = [(g[k], g[k + 1]) for g in exact for k in range(len(g) - 1)] + [(i, j) for i, j, _ in near]
    src = np.array([e[0] for e in edges], dtype=np.intp)
    dst = np.array([e[1] for e in edges], dtype=np.intp)
    graph = coo_matrix((np.ones(len(edges)), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return DuplicateReport(
        exact_groups=exact,
        near_pairs=near,
        group_of=labels.astype(np.int64),
        threshold=threshold,
        distance_counts=counts,
        unreadable=[i for i in range(n) if not readable[i]],
    )


def progress_iter(items: Sequence[T], progress: bool, desc: str) -> Iterable[T]:
    """``items``, with a tqdm progress bar on stderr when ``progress``."""
    if not progress:
        return items
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    wrapped: Iterable[T] = tqdm(items, desc=desc, unit="img")
    return wrapped


def find_duplicates(
    paths: Sequence[Path], *, threshold: int = DEFAULT_THRESHOLD, progress: bool = False
) -> DuplicateReport:
    """Exact (SHA-256) and near (dihedral phash within ``threshold`` bits) duplicates among ``paths``.

    Files that cannot be decoded take part in byte-identical detection only (see ``unreadable``).
    """
    digests: list[str] = []
    hashes = np.zeros((len(paths), len(_TRANSFORMS)), np.uint64)
    readable: list[bool] = []
    for index, path in enumerate(progress_iter(paths, progress, "hashing")):
        data = path.read_bytes()
        digests.append(file_sha256(data))
        try:
            hashes[index] = dihedral_phashes(decode_image(data).pixels)
            readable.append(True)
        except InvalidImage:
            readable.append(False)
    return duplicates_from_hashes(digests, hashes, readable, threshold=threshold)
