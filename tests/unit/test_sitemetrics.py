"""Per-site metrics: macro-F1 over the classes a site has, the myeloblast view, referral."""

from __future__ import annotations

import numpy as np
import pytest

from hemascope.training.sitemetrics import per_site, site_metrics

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


def _onehot(pred: list[int]) -> np.ndarray:
    p = np.full((len(pred), 5), 0.01)
    p[np.arange(len(pred)), pred] = 0.96
    return p


def test_two_class_site_is_scored_on_its_two_classes() -> None:
    y = np.array([3, 3, 3, 3, 4, 4, 4, 4])
    pred = [3, 3, 3, 1, 4, 4, 3, 4]
    m = site_metrics(y, _onehot(pred), CLASSES, [3])
    assert m["classes"] == ["myeloblast", "seg_neutrophil"]
    assert m["myeloblast_sensitivity"] == pytest.approx(0.75)
    assert m["myeloblast_fpr"] == pytest.approx(0.25) and m["myeloblast_specificity"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(np.mean([6 / 8, 6 / 7]))  # F1 = 2TP / (2TP + FP + FN)
    assert m["called"]["myeloblast"]["erythroblast"] == 1


def test_site_without_myeloblasts_has_no_sensitivity_and_referral_is_counted() -> None:
    y = np.array([0, 1, 2, 2])
    m = site_metrics(y, _onehot([0, 1, 3, 2]), CLASSES, [3], referred=np.array([False, False, True, False]))
    assert m["myeloblast_sensitivity"] is None and m["sensitivity_at_95_specificity"] is None
    assert m["myeloblast_fpr"] == pytest.approx(0.25)
    assert m["referred"] == pytest.approx(0.25) and m["errors_referred"] == pytest.approx(1.0)
    assert m["answered_accuracy"] == pytest.approx(1.0)


def test_per_site_splits_rows_by_site() -> None:
    y = np.array([0, 3, 3, 4])
    out = per_site(y, _onehot([0, 3, 4, 4]), ["a", "b", "b", "b"], CLASSES, [3])
    assert set(out) == {"a", "b"} and out["a"]["n"] == 1 and out["b"]["n"] == 3
    assert out["b"]["myeloblast_sensitivity"] == pytest.approx(0.5)
