"""Metrics, calibration, splits and the k-means mapping on small known cases."""

from __future__ import annotations

import numpy as np
import pytest

from hemascope.bundle import apply_temperature
from hemascope.training.calibration import abstain_threshold, fit_temperature, reliability, risk_coverage
from hemascope.training.metrics import classification_metrics, malignancy, specificities, summarise_folds
from hemascope.training.models import hungarian_mapping
from hemascope.training.split import grouped_folds, grouped_split

CLASSES = ("a", "b", "c")


def _onehot(pred: list[int], n: int = 3, p: float = 0.9) -> np.ndarray:
    out = np.full((len(pred), n), (1 - p) / (n - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_specificity_from_confusion_matrix() -> None:
    cm = np.array([[5, 1, 0], [0, 4, 0], [1, 0, 3]])
    spec = specificities(cm)
    # class a: TN = 4 + 0 + 0 + 3 = 7, FP = 1 -> 7/8
    assert spec[0] == pytest.approx(7 / 8)
    assert spec[1] == pytest.approx(9 / 10)


def test_classification_metrics_perfect_and_wrong() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = classification_metrics(y, _onehot([0, 0, 1, 1, 2, 2]), CLASSES, [2])
    assert perfect["accuracy"] == 1.0
    assert perfect["macro_f1"] == 1.0
    assert perfect["roc_auc"] == 1.0
    assert perfect["malignant"] == {"sensitivity": 1.0, "specificity": 1.0, "roc_auc": 1.0}
    wrong = classification_metrics(y, _onehot([1, 0, 1, 1, 0, 2]), CLASSES, [2])
    assert wrong["accuracy"] == pytest.approx(4 / 6)
    assert wrong["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert wrong["malignant"]["sensitivity"] == pytest.approx(0.5)


def test_malignancy_handles_single_class_data() -> None:
    y = np.array([0, 0, 0])
    out = malignancy(y, _onehot([0, 2, 0]), [2])
    assert out["sensitivity"] is None
    assert out["specificity"] == pytest.approx(2 / 3)
    assert out["roc_auc"] is None


def test_reliability_ece_of_overconfident_model() -> None:
    y = np.array([0, 1, 0, 1])
    proba = _onehot([0, 0, 0, 0], p=0.99)  # 99 % confident, 50 % right
    assert reliability(y, proba)["ece"] == pytest.approx(0.49, abs=1e-6)


def test_temperature_softens_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    pred = np.where(rng.random(600) < 0.7, y, (y + 1) % 3)  # 70 % accurate
    proba = _onehot(list(pred), p=0.99)
    t = fit_temperature(y, proba)
    assert t > 1.5
    before = reliability(y, proba)["ece"]
    after = reliability(y, apply_temperature(proba, t))["ece"]
    assert after < before / 2


def test_abstain_threshold_hits_target_coverage_and_lowers_risk() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 1000)
    confidence = rng.uniform(0.34, 1.0, 1000)
    correct = rng.random(1000) < confidence
    pred = np.where(correct, y, (y + 1) % 3)
    proba = np.full((1000, 3), 0.0)
    proba[np.arange(1000), pred] = confidence
    proba[np.arange(1000), (pred + 1) % 3] = 1 - confidence
    threshold = abstain_threshold(proba, 0.8)
    rc = risk_coverage(y, proba, threshold)
    assert rc["coverage"] == pytest.approx(0.8, abs=0.01)
    assert rc["risk"] < rc["curve"][0]["risk"]  # referring the least confident lowers the error rate


def test_grouped_split_keeps_groups_together_and_is_stratified() -> None:
    y = np.repeat(np.arange(5), 40)
    groups = np.arange(200) // 2  # pairs of duplicates
    split = grouped_split(y, groups, seed=50)
    assert not set(groups[split.train]) & set(groups[split.test])
    assert not set(groups[split.fit]) & set(groups[split.calib])
    assert set(split.fit) | set(split.calib) == set(split.train)
    assert len(split.test) == pytest.approx(40, abs=4)
    assert np.bincount(y[split.test]).min() >= 6
    again = grouped_split(y, groups, seed=50)
    assert np.array_equal(again.test, split.test)
    for train, val in grouped_folds(y[split.train], groups[split.train], 5, 50):
        assert not set(groups[split.train][train]) & set(groups[split.train][val])


def test_hungarian_mapping_recovers_permuted_clusters() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    clusters = (y + 2) % 5  # cluster k holds class k-2
    mapping = hungarian_mapping(clusters, y, 5)
    assert [mapping[c] for c in clusters] == list(y)


def test_summarise_folds_mean_and_std() -> None:
    folds = [
        {"accuracy": 0.8, "malignant": {"sensitivity": 1.0}},
        {"accuracy": 0.9, "malignant": {"sensitivity": 0.5}},
    ]
    out = summarise_folds(folds)
    assert out["accuracy"]["mean"] == pytest.approx(0.85)
    assert out["accuracy"]["std"] == pytest.approx(0.05)
    assert out["malignant_sensitivity"]["mean"] == pytest.approx(0.75)
