"""ROAD's noisy linear imputation (Rong et al. 2022), with the grad-cam library's equation system built fast.

:class:`pytorch_grad_cam.metrics.road.NoisyLinearImputer` fills each removed pixel with the weighted mean of
its 8 neighbours (one sparse linear system per image) and adds noise. It assembles the system in a
``lil_matrix`` row by row, which costs as much as solving it. :func:`imputation_system` builds the same
matrix and right-hand side with vectorised COO assembly (equality with the library's is tested), and
:class:`FastNoisyLinearImputer` is a drop-in imputer for the library's ``RemoveMostRelevantFirst`` /
``RemoveLeastRelevantFirst`` perturbations, with its noise drawn from its own seeded generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pytorch_grad_cam.metrics.road import neighbors_weights
from scipy.sparse import coo_matrix, csc_matrix
from scipy.sparse.linalg import spsolve

NOISE = 0.01  # the library's default


def imputation_system(
    mask: NDArray[np.floating[Any]], image: NDArray[np.floating[Any]]
) -> tuple[csc_matrix, NDArray[np.float64], NDArray[np.int64]]:
    """``(A, b, missing)`` for ``mask`` (H x W, 1 = keep) and ``image`` (C x H x W): ``A x = b`` gives the
    imputed values (``len(missing)`` x C) of the flat pixel indices ``missing``."""
    height, width = mask.shape
    flat_mask = mask.reshape(-1)
    flat_image = image.reshape(image.shape[0], -1).astype(np.float64)
    missing = np.flatnonzero(flat_mask == 0).astype(np.int64)
    count = len(missing)
    variable = np.full(flat_mask.shape[0], -1, np.int64)
    variable[missing] = np.arange(count)
    row, col = np.divmod(missing, width)
    diagonal = np.ones(count)
    b = np.zeros((count, image.shape[0]))
    rows: list[NDArray[np.int64]] = [np.arange(count)]
    cols: list[NDArray[np.int64]] = [np.arange(count)]
    values: list[NDArray[np.float64]] = []
    for (d_row, d_col), weight in neighbors_weights:
        r, c = row + d_row, col + d_col
        inside = (r >= 0) & (c >= 0) & (r < height) & (c < width)
        diagonal[~inside] -= weight
        ids = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        known = flat_mask[neighbour] > 0.5
        b[ids[known]] -= weight * flat_image[:, neighbour[known]].T
        unknown = ~known & (flat_mask[neighbour] < 0.5)
        rows.append(ids[unknown])
        cols.append(variable[neighbour[unknown]])
        values.append(np.full(int(unknown.sum()), weight))
    values.insert(0, -diagonal)
    matrix = coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(count, count)
    )
    return csc_matrix(matrix), b, missing


class FastNoisyLinearImputer:
    """``imputer(image C x H x W, mask H x W) -> image`` with the removed pixels (mask 0) imputed."""

    def __init__(self, noise: float = NOISE, seed: int = 0) -> None:
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = img.detach().cpu().numpy()
        matrix, b, missing = imputation_system(mask.detach().cpu().numpy(), image)
        flat = image.reshape(image.shape[0], -1).copy()
        if len(missing):
            solution = np.asarray(spsolve(matrix, b)).reshape(len(missing), -1)
            noise = self.noise * self.rng.standard_normal(solution.shape) if self.noise else 0.0
            flat[:, missing] = (solution + noise).T
        return torch.from_numpy(flat.reshape(image.shape).astype(np.float32))
