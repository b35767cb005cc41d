"""The acquisition check of a call: each embedding's fingerprint against the bundle's reference. No gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle.site import SiteReference
from hemascope.imaging.fingerprint import REVISION, SIZE
from services.classifier.inputs import EmbeddingInput


@dataclass(frozen=True)
class Acquisition:
    """Fingerprints of a call's embeddings (N x SIZE; zeros where unchecked) and which rows are checked."""

    fingerprints: NDArray[np.float64]
    checked: NDArray[np.bool_]

    @staticmethod
    def of(embeddings: Sequence[EmbeddingInput], site: SiteReference | None) -> Acquisition:
        """A row is checked when the bundle has a reference and the embedding carries a fingerprint of the
        running revision with the right length; any other row is answered without the check."""
        n = len(embeddings)
        fingerprints = np.zeros((n, SIZE), dtype=np.float64)
        checked = np.zeros(n, dtype=np.bool_)
        if site is None:
            return Acquisition(fingerprints, checked)
        for i, item in enumerate(embeddings):
            values = item.acquisition
            if values is None or item.acquisition_revision != REVISION or values.shape != (SIZE,):
                continue
            if not np.isfinite(values).all():
                continue
            fingerprints[i] = values
            checked[i] = True
        return Acquisition(fingerprints, checked)

    def judge(
        self, site: SiteReference | None, labels: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Each row's score against its label's reference, and whether it is atypical (False: unchecked)."""
        scores = np.zeros(len(labels), dtype=np.float64)
        atypical = np.zeros(len(labels), dtype=np.bool_)
        if site is None or not self.checked.any():
            return scores, atypical
        rows = np.flatnonzero(self.checked)
        scores[rows] = site.score(self.fingerprints[rows], labels[rows])
        atypical[rows] = site.atypical(scores[rows], labels[rows])
        return scores, atypical
