"""Cross-source metrics, same-source referral metrics, and the robustness study's choice rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from hemascope.datasets import CLASSES
from hemascope.training.crosssource import cross_source_metrics, myeloblast_fpr, referral_metrics
from hemascope.training.study import choose


def _onehot(labels: list[int], confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(labels), 5), (1 - confidence) / 4)
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_probe_metrics_count_calls_and_referred_errors() -> None:
    neutrophil = CLASSES.index("seg_neutrophil")
    y = np.full(6, neutrophil, dtype=np.int64)
    proba = _onehot([neutrophil, neutrophil, 0, 0, 2, 3])
    low = np.array([False, False, True, False, False, False])
    ood = np.array([False, True, False, True, False, False])
    m = cross_source_metrics(y, proba, CLASSES, low, ood)
    assert m["accuracy"] == 2 / 6
    assert m["called"] == {
        "seg_neutrophil": {
            "basophil": 2,
            "erythroblast": 0,
            "monocyte": 1,
            "myeloblast": 1,
            "seg_neutrophil": 2,
        }
    }
    assert m["errors"] == 4 and m["errors_referred"] == 0.5  # 2 of the 4 errors flagged
    assert m["correct_referred"] == 0.5 and m["referred"] == 0.5
    assert m["out_of_distribution"] == 2 / 6 and m["errors_out_of_distribution"] == 0.25
    assert m["answered_accuracy"] == 1 / 3


def test_referral_metrics_and_myeloblast_fpr() -> None:
    y = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    proba = _onehot([0, 3, 2, 3, 4])  # one erythroblast called myeloblast
    none = np.zeros(5, dtype=np.bool_)
    flagged = np.array([False, True, False, False, False])
    r = referral_metrics(y, proba, none, flagged)
    assert r["coverage"] == 0.8 and r["answered_accuracy"] == 1.0 and r["errors_referred"] == 1.0
    assert myeloblast_fpr(y, proba, [3]) == 0.25


def _row(option: str, augment: int, f1: float, fpr: float, probe: float, ms: float = 1.0) -> dict[str, Any]:
    return {
        "option": option,
        "augment": augment,
        "macro_f1": f1,
        "myeloblast_fpr": fpr,
        "probe_accuracy": probe,
        "ms_per_image": ms,
    }


def test_choice_needs_the_f1_floor_and_no_higher_myeloblast_fpr() -> None:
    plain = _row("plain", 0, 0.97, 0.01, 0.06)
    rows = [
        plain,
        _row("plain", 2, 0.96, 0.01, 0.30),
        _row("macenko", 0, 0.96, 0.02, 0.90),  # best probe, but more myeloblast false positives: flagged
        _row("gray", 0, 0.93, 0.00, 0.80),  # below the macro-F1 floor
        _row("cellcrop", 2, 0.955, 0.005, 0.50),
    ]
    chosen = choose(rows, plain, 0.95)
    assert chosen is not None and (chosen["option"], chosen["augment"]) == ("cellcrop", 2)
    assert [r["fpr_above_plain"] for r in rows] == [False, False, True, False, False]
    assert [r["eligible"] for r in rows] == [True, True, False, False, True]
    assert choose([_row("gray", 0, 0.5, 0.0, 0.9)], plain, 0.95) is None
