"""The statistics of a site validation: Wilson intervals, the patient bootstrap, the per-model figures."""

from __future__ import annotations

import numpy as np
import pytest

from hemascope.site.metrics import model_metrics
from hemascope.site.stats import (
    CLUSTER,
    WILSON,
    Resampler,
    bootstrap,
    proportion,
    threshold_for_sensitivity,
    wilson,
)

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # Newcombe, Statistics in Medicine 17 (1998), Table II, method 3 (Wilson score, no correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    assert wilson(k, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_is_symmetric_and_refuses_nonsense() -> None:
    low, high = wilson(3, 10)
    assert wilson(7, 10) == pytest.approx((1 - high, 1 - low))
    assert wilson(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="n > 0"):
        wilson(1, 0)
    with pytest.raises(ValueError, match="k <= n"):
        wilson(5, 4)


def _grouped(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = [f"p{i // 20}" for i in range(200)]  # 10 patients of 20 cells
    success = rng.random(200) < np.repeat(rng.uniform(0.3, 1.0, 10), 20)  # patients differ
    return patients, success, np.ones(200, dtype=np.bool_)


def test_cluster_bootstrap_is_deterministic_with_a_seed() -> None:
    patients, success, within = _grouped()
    first = proportion(success, within, Resampler.create(patients, 500, seed=7))
    again = proportion(success, within, Resampler.create(patients, 500, seed=7))
    other = proportion(success, within, Resampler.create(patients, 500, seed=8))
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.method == CLUSTER


def test_patients_widen_the_interval_beyond_wilson() -> None:
    patients, success, within = _grouped()
    by_patient = proportion(success, within, Resampler.create(patients, 1000, seed=0))
    by_cell = proportion(success, within, Resampler.create([""] * 200, 1000, seed=0))
    assert by_cell.method == WILSON
    assert (by_cell.low, by_cell.high) == pytest.approx(wilson(by_cell.k or 0, by_cell.n or 0))
    assert by_patient.value == by_cell.value
    assert by_patient.low is not None and by_cell.low is not None
    assert by_patient.high is not None and by_cell.high is not None
    assert by_patient.low <= by_cell.low and by_patient.high >= by_cell.high
    assert by_patient.high - by_patient.low > 1.2 * (by_cell.high - by_cell.low)  # clustered data


def test_a_perfect_patient_bootstrap_is_never_narrower_than_wilson() -> None:
    patients = [f"p{i // 5}" for i in range(20)]
    everything = np.ones(20, dtype=np.bool_)
    estimate = proportion(everything, everything, Resampler.create(patients, 200, seed=0))
    assert estimate.value == 1.0
    assert estimate.low == pytest.approx(wilson(20, 20)[0])


def test_no_cells_is_not_measurable() -> None:
    none = np.zeros(10, dtype=np.bool_)
    estimate = proportion(none, none, Resampler.create([""] * 10, 100, seed=0))
    assert estimate.value is None and estimate.n == 0


def test_resampled_cells_follow_their_patients() -> None:
    resampler = Resampler.create(["a", "a", "b", "c", "c", "c"], 50, seed=3)
    assert resampler.grouped and resampler.clusters == 3
    for b in range(resampler.replicates):
        counts = np.bincount(resampler.indices(b), minlength=6)
        assert counts[0] == counts[1] and counts[3] == counts[4] == counts[5]
        assert resampler.counts[b].sum() == 3


def test_bootstrap_of_a_statistic_brackets_its_value() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=300)
    estimate = bootstrap(lambda idx: float(values[idx].mean()), Resampler.create([""] * 300, 500, 0), 300)
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low < estimate.value < estimate.high  # type: ignore[operator]


def test_threshold_reaches_the_target_sensitivity() -> None:
    truth = np.array([True] * 10 + [False] * 10)
    score = np.concatenate([np.linspace(0.1, 1.0, 10), np.linspace(0.0, 0.45, 10)])
    found = threshold_for_sensitivity(truth, score, 0.8)
    assert found is not None
    assert found["sensitivity"] >= 0.8
    assert found["threshold"] == pytest.approx(0.3)  # the 8th highest myeloblast score
    assert found["specificity"] == pytest.approx(np.mean(score[10:] < 0.3))
    assert threshold_for_sensitivity(np.zeros(5, dtype=np.bool_), score[:5], 0.9) is None


def test_model_metrics_on_known_predictions() -> None:
    y = np.repeat(np.arange(5), 4).astype(np.int64)
    pred = y.copy()
    pred[0] = 3  # one basophil called myeloblast
    pred[12] = 4  # one myeloblast missed
    proba = np.full((20, 5), 0.05)
    proba[np.arange(20), pred] = 0.8
    low = np.zeros(20, dtype=np.bool_)
    low[12] = True  # the missed myeloblast is referred
    ood = np.zeros(20, dtype=np.bool_)
    resampler = Resampler.create([""] * 20, 200, seed=0)
    m = model_metrics(y, proba, CLASSES, [3], (low, ood), resampler, 0.95)
    assert m["per_class"]["basophil"]["sensitivity"]["value"] == pytest.approx(0.75)
    assert m["myeloblast"]["sensitivity"]["k"] == 3 and m["myeloblast"]["sensitivity"]["n"] == 4
    assert m["myeloblast"]["specificity"]["value"] == pytest.approx(15 / 16)
    assert m["referral"]["rate"]["value"] == pytest.approx(0.05)
    assert m["all"]["accuracy"]["value"] == pytest.approx(0.9)
    assert m["answered"]["n"] == 19 and m["answered"]["accuracy"]["value"] == pytest.approx(18 / 19)
    assert m["referral"]["errors_referred"]["value"] == pytest.approx(0.5)
    assert 0 <= m["calibration"]["ece"] <= 1
    for node in (m["myeloblast"]["sensitivity"], m["myeloblast"]["auc"], m["all"]["accuracy"]):
        assert node["low"] <= node["value"] <= node["high"]
