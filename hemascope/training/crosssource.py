"""Cross-source evaluation: what a model calls cells of a known class imaged by another scanner, and how
many of its errors the referral flags (low confidence, out of distribution) catch.

The probe (``../shared/data/probe-pbc-neutrophil``: 200 neutrophils from the Barcelona scanner, while every
training neutrophil comes from Munich) is for evaluation only: nothing is fitted, tuned or thresholded on
it anywhere in Hemascope.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.data import shared_data_dir
from hemascope.datasets import ImageRecord, scan_dataset

DEFAULT_PROBE_NAME = "probe-pbc-neutrophil"
BoolArray = NDArray[np.bool_]


def default_probe() -> Path | None:
    """The shared neutrophil probe when it is present, else ``None``."""
    path = shared_data_dir() / DEFAULT_PROBE_NAME
    return path if path.is_dir() else None


def probe_records(root: Path, classes: Sequence[str]) -> list[ImageRecord]:
    """The probe's images (folder-per-class, e.g. ``seg_neutrophil/*.jpg``); raises if there are none."""
    records = scan_dataset(root, classes=tuple(classes)).records
    if not records:
        raise FileNotFoundError(f"no probe images of the classes {list(classes)} under {root}")
    return records


def _fraction(mask: BoolArray, within: BoolArray | None = None) -> float | None:
    chosen = mask if within is None else mask[within]
    return float(chosen.mean()) if len(chosen) else None


def cross_source_metrics(
    y: NDArray[np.int64],
    proba: NDArray[np.float64],
    classes: Sequence[str],
    low_confidence: BoolArray,
    out_of_distribution: BoolArray,
) -> dict[str, Any]:
    """Probe accuracy, its confusion rows (what each true class is called), and the referral of its errors."""
    pred = proba.argmax(axis=1)
    correct = pred == y
    referred = low_confidence | out_of_distribution
    called = {
        classes[t]: {c: int(((y == t) & (pred == i)).sum()) for i, c in enumerate(classes)}
        for t in sorted({int(v) for v in y})
    }
    return {
        "n": len(y),
        "accuracy": float(correct.mean()) if len(y) else None,
        "called": called,
        "referred": _fraction(referred),
        "low_confidence": _fraction(low_confidence),
        "out_of_distribution": _fraction(out_of_distribution),
        "errors": int((~correct).sum()),
        "errors_referred": _fraction(referred, ~correct),
        "errors_out_of_distribution": _fraction(out_of_distribution, ~correct),
        "correct_referred": _fraction(referred, correct),
        "answered_accuracy": _fraction(correct, ~referred),
    }


def referral_metrics(
    y: NDArray[np.int64],
    proba: NDArray[np.float64],
    low_confidence: BoolArray,
    out_of_distribution: BoolArray,
) -> dict[str, Any]:
    """Same-source operating point with referral on: coverage (answered) and accuracy of the answered."""
    correct = proba.argmax(axis=1) == y
    referred = low_confidence | out_of_distribution
    return {
        "n": len(y),
        "coverage": float((~referred).mean()) if len(y) else None,
        "answered_accuracy": _fraction(correct, ~referred),
        "low_confidence": _fraction(low_confidence),
        "out_of_distribution": _fraction(out_of_distribution),
        "errors_referred": _fraction(referred, ~correct),
    }


def myeloblast_fpr(
    y: NDArray[np.int64], proba: NDArray[np.float64], malignant: Sequence[int]
) -> float | None:
    """Fraction of non-malignant cells called malignant (argmax label)."""
    truth = np.isin(y, malignant)
    called = np.isin(proba.argmax(axis=1), malignant)
    return float(called[~truth].mean()) if (~truth).any() else None
