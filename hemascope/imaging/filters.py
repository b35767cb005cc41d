"""Image filters for the cell segmentation and the channels, in OpenCV, bit-identical to the SciPy / NumPy
definitions the preprocessing versions were made with.

Each function names the call it reproduces; ``tests/unit/test_filters.py`` checks the equality on random
and real images, so a preprocessing version's output never depends on which of the two computed it.

- :func:`gaussian`: ``scipy.ndimage.gaussian_filter`` (``mode="reflect"``, ``truncate=4``) on a 2-D float32
  image. SciPy filters axis 0 then axis 1 in double precision and stores the intermediate in the output's
  float32; here each pass is an OpenCV double-precision filter on an explicitly reflected copy, rounded to
  float32 between and after the passes, so the rounding points are the same.
- :func:`erode` / :func:`dilate` / :func:`opening` / :func:`closing`: ``scipy.ndimage.binary_*`` with a
  square (3 x 3) or cross structure and ``border_value=0`` (outside the image is background).
- :func:`maximum3` / :func:`minimum3`: ``scipy.ndimage.maximum_filter`` / ``minimum_filter`` with
  ``size=3`` (``mode="reflect"``, which for a 3 x 3 window repeats the edge pixel).
- :func:`fill_holes`: ``scipy.ndimage.binary_fill_holes`` (background 4-connected to the outside is kept).
- :func:`components`: ``scipy.ndimage.label`` (4-connectivity) with its raster-order numbering, areas,
  centres of mass and whether each component touches the border.
- :func:`label_medians`: ``scipy.ndimage.median(values, labels, index)`` for every label of a float image.
- :func:`median`: ``numpy.median`` of a 1-D float array, without its generic machinery.
- :func:`percentile`: ``numpy.percentile`` (``method="linear"``) for a few percentiles of a large array,
  from the order statistics near them instead of a partition of the whole array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

_SQUARE = np.ones((3, 3), np.uint8)
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
_TRUNCATE = 4.0
#: A percentile's neighbourhood is found on every :data:`_STRIDE`-th value, then checked on all of them.
_STRIDE = 8
#: ... taking this many extra ranks (as a fraction of the array) on the subsample's side, for safety.
_MARGIN = 0.02
#: Below this many values a partition of the whole array is the cheaper way.
_SMALL = 32768


@cache
def _gaussian_kernel(sigma: float) -> NDArray[np.float64]:
    """SciPy's ``_gaussian_kernel1d(sigma, 0, radius)`` with ``radius = int(truncate * sigma + 0.5)``."""
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    sigma2 = sigma * sigma
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / sigma2 * x**2)
    kernel: NDArray[np.float64] = phi / phi.sum()
    kernel.setflags(write=False)
    return kernel


def _filter_axis(image: NDArray[np.float32], kernel: NDArray[np.float64], axis: int) -> NDArray[np.float32]:
    # OpenCV's BORDER_REFLECT (``dcba|abcd|dcba``, repeated for kernels longer than the image) is SciPy's
    # "reflect"; the sums run in double precision and are rounded to float32 once, as SciPy stores them.
    one = np.ones(1, np.float64)
    kx, ky = (one, kernel) if axis == 0 else (kernel, one)
    out = cv2.sepFilter2D(image, cv2.CV_64F, kx, ky, borderType=cv2.BORDER_REFLECT)
    return np.asarray(out.astype(np.float32))


def gaussian(image: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` for a 2-D float32 image, bit for bit."""
    kernel = _gaussian_kernel(float(sigma))
    return _filter_axis(_filter_axis(np.ascontiguousarray(image, np.float32), kernel, 0), kernel, 1)


def _u8(mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    return (
        mask.view(np.uint8) if mask.dtype == np.bool_ and mask.flags.c_contiguous else mask.astype(np.uint8)
    )


def erode(mask: NDArray[np.bool_], iterations: int = 1, *, cross: bool = False) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_erosion(mask, structure, iterations)`` with a 3 x 3 square (or cross)."""
    kernel = _CROSS if cross else _SQUARE
    out = cv2.erode(_u8(mask), kernel, iterations=iterations, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(np.bool_)


def dilate(mask: NDArray[np.bool_], iterations: int = 1, *, cross: bool = False) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_dilation(mask, structure, iterations)`` with a 3 x 3 square (or cross)."""
    kernel = _CROSS if cross else _SQUARE
    out = cv2.dilate(_u8(mask), kernel, iterations=iterations, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(np.bool_)


def opening(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_opening(mask, structure=np.ones((3, 3)))``."""
    return dilate(erode(mask))


def closing(mask: NDArray[np.bool_], iterations: int = 1) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=iterations)``."""
    return erode(dilate(mask, iterations), iterations)


def maximum3(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``scipy.ndimage.maximum_filter(image, size=3)`` for a 2-D uint8 image."""
    return np.asarray(cv2.dilate(image, _SQUARE, borderType=cv2.BORDER_REPLICATE))


def minimum3(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``scipy.ndimage.minimum_filter(image, size=3)`` for a 2-D uint8 image."""
    return np.asarray(cv2.erode(image, _SQUARE, borderType=cv2.BORDER_REPLICATE))


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``scipy.ndimage.binary_fill_holes(mask)``: background not 4-connected to the outside becomes mask."""
    h, w = mask.shape
    canvas = np.ones((h + 2, w + 2), np.uint8)  # a ring of background joins every border pixel
    canvas[1:-1, 1:-1] = ~mask
    cv2.floodFill(canvas, None, (0, 0), 2, flags=4)
    return np.asarray(canvas[1:-1, 1:-1] != 2)


@dataclass(frozen=True)
class Components:
    """4-connected components numbered as ``scipy.ndimage.label`` numbers them (raster order of their
    first pixel, from 1); per component (index ``k - 1`` for label ``k``): area, centre of mass ``(y, x)``
    and whether it touches the image border."""

    labels: NDArray[np.int32]
    areas: NDArray[np.float64]
    centres: NDArray[np.float64]
    touches_border: NDArray[np.bool_]

    @property
    def count(self) -> int:
        return int(self.areas.size)


def components(mask: NDArray[np.bool_]) -> Components:
    """``scipy.ndimage.label(mask)`` with ``sum_labels``, ``center_of_mass`` and the border test."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(_u8(mask), connectivity=4)
    h, w = mask.shape
    found = np.arange(1, count, dtype=np.int32)
    top = stats[1:, cv2.CC_STAT_TOP]
    # Each component's first pixel in raster order: the first column of its top row holding it.
    first_x = np.argmax(labels[top] == found[:, None], axis=1)
    order = np.lexsort((first_x, top))
    relabel = np.zeros(count, np.int32)
    relabel[found[order]] = np.arange(1, count, dtype=np.int32)
    st = stats[1:][order]
    right = st[:, cv2.CC_STAT_LEFT] + st[:, cv2.CC_STAT_WIDTH]
    bottom = st[:, cv2.CC_STAT_TOP] + st[:, cv2.CC_STAT_HEIGHT]
    touches = (st[:, cv2.CC_STAT_LEFT] == 0) | (st[:, cv2.CC_STAT_TOP] == 0) | (right == w) | (bottom == h)
    return Components(
        labels=relabel[labels],
        areas=st[:, cv2.CC_STAT_AREA].astype(np.float64),
        centres=np.ascontiguousarray(centroids[1:][order][:, ::-1], dtype=np.float64),
        touches_border=np.asarray(touches),
    )


def _order_statistics(flat: NDArray[np.floating], ranks: Sequence[int]) -> list[float]:
    """The values of the sorted ``flat`` at ``ranks`` (each rank's neighbourhood found on a subsample)."""
    n = flat.size
    lowest, highest = min(ranks), max(ranks)
    if n < _SMALL:
        ordered = np.partition(flat, sorted(set(ranks)))
        return [float(ordered[r]) for r in ranks]
    sub = flat[::_STRIDE]
    margin = int(_MARGIN * sub.size) + 1
    lo_k = max(0, lowest * sub.size // n - margin)
    hi_k = min(sub.size - 1, highest * sub.size // n + margin)
    cuts = np.partition(sub, [lo_k, hi_k])
    lo, hi = cuts[lo_k], cuts[hi_k]
    below = int(np.count_nonzero(flat < lo))
    window = flat[(flat >= lo) & (flat <= hi)]
    if not below <= lowest or not highest < below + window.size:
        ordered = np.partition(flat, sorted(set(ranks)))  # the subsample missed: the exact way
        return [float(ordered[r]) for r in ranks]
    window.sort()
    return [float(window[r - below]) for r in ranks]


def percentile(values: NDArray[np.floating], q: Sequence[float]) -> list[float]:
    """``numpy.percentile(values, q)`` (linear method, ``q`` a list; no NaN in ``values``), bit for bit.

    The interpolation is NumPy's: ``a + (b - a) * g`` (``b - (b - a) * (1 - g)`` when ``g >= 0.5``), with
    ``b - a`` in the values' dtype and the rest in float64."""
    flat = np.ravel(values)
    n = flat.size
    virtual = (n - 1) * np.true_divide(np.asarray(q, dtype=np.float64), 100)
    lower = [min(int(np.floor(v)), n - 1) for v in virtual]
    upper = [min(k + 1, n - 1) if v < n - 1 else n - 1 for k, v in zip(lower, virtual, strict=True)]
    lower = [k if v < n - 1 else n - 1 for k, v in zip(lower, virtual, strict=True)]
    stats = _order_statistics(flat, [*lower, *upper])
    out = []
    for i, v in enumerate(virtual):
        a, b = flat.dtype.type(stats[i]), flat.dtype.type(stats[len(lower) + i])
        gamma = float(v - np.floor(v)) if v < n - 1 else float(v - (n - 1))
        diff = np.float64(b - a)
        result = np.float64(b) - diff * (1 - gamma) if gamma >= 0.5 else np.float64(a) + diff * gamma
        out.append(float(result))
    return out


def median(values: NDArray[np.floating]) -> np.floating:
    """``numpy.median(values)`` of a 1-D float array without NaN, bit for bit, in the values' dtype: the
    middle value, or the two middle values' sum halved (in the dtype, as ``numpy.mean`` of two does)."""
    n = values.size
    if n == 0:
        raise ValueError("the median of no values")
    k = n // 2
    dtype = values.dtype.type
    if n % 2:
        return dtype(np.partition(values, k)[k])
    part = np.partition(values, [k - 1, k])
    return dtype(dtype(part[k - 1] + part[k]) / 2)


def label_medians(
    values: NDArray[np.floating], labels: NDArray[np.int32], count: int
) -> NDArray[np.floating]:
    """``scipy.ndimage.median(values, labels, range(1, count + 1))`` for a float image whose labels are
    ``0 .. count`` (each present), bit for bit: per label, its middle value or the two middle values' sum
    halved, in the values' dtype. Only the labelled pixels are sorted (SciPy sorts the whole image)."""
    inside = labels > 0
    lab, val = labels[inside], values[inside]
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    wanted = np.arange(1, count + 1)
    lo = np.searchsorted(lab, wanted, side="left")
    hi = np.searchsorted(lab, wanted, side="right") - 1
    step = (hi - lo) // 2
    return np.asarray((val[lo + step] + val[hi - step]) / 2.0)
