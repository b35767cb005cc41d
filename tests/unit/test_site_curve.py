"""The learning curve's sampling: adaptation cells come only from pool patients, at most N per class, and
the evaluation patients are never used to adapt."""

from __future__ import annotations

import numpy as np

from hemascope.bundle import load_bundle
from hemascope.site.adapt_report import render_curve_report
from hemascope.site.curve import learning_curve, sample_cells, split_patients
from services.classifier.synthetic import build_synthetic_bundle
from tests.site_profile_fixtures import SPEC, site_cells

Y = np.arange(200) % 5
PATIENTS = [f"P{(i * 7) % 16}" for i in range(200)]


def test_split_keeps_patients_apart_and_every_class_on_both_sides() -> None:
    pool, evaluation = split_patients(Y, PATIENTS, 5, np.random.default_rng(0))
    owners = {PATIENTS[i] for i in evaluation}
    assert not owners & set(pool)
    assert len(pool) == 8 and len(owners) == 8
    assert set(Y[evaluation]) == set(range(5))


def test_sampling_takes_at_most_n_per_class_from_the_pool_in_order() -> None:
    pool, _ = split_patients(Y, PATIENTS, 5, np.random.default_rng(1))
    for n in (1, 3, 10, 1000):
        chosen = sample_cells(Y, PATIENTS, pool, n, 5)
        counts = np.bincount(Y[chosen], minlength=5)
        assert counts.max() <= n
        assert {PATIENTS[i] for i in chosen} <= set(pool)
        if n == 3:
            assert (counts == 3).all()
            # the first pool patients are the ones used
            used = {PATIENTS[i] for i in chosen}
            assert pool[0] in used


def test_learning_curve_scores_before_and_after_on_other_patients(tmp_path) -> None:  # type: ignore[no-untyped-def]
    build_synthetic_bundle(tmp_path / "b", SPEC)
    bundle = load_bundle(tmp_path / "b")
    x, y = site_cells(200)
    patients = [f"P{i % 16}" for i in range(len(y))]
    result = learning_curve(bundle, bundle.scale(x), y, patients, sizes=[5, 20], seeds=1)
    assert [r["per_class"] for r in result["runs"]] == [5, 20]
    for run in result["runs"]:
        assert sum(run["cells"].values()) <= 5 * run["per_class"]
        assert run["eval_patients"] == 8
        for name in SPEC.models:
            assert 0 <= run["after"][name]["macro_f1"] <= 1
    report = render_curve_report(result, "synthetic", tmp_path / "report")
    text = report.read_text()
    assert text.count("| Logistic regression |") == 2 and text.count("| SVM |") == 2
    assert (tmp_path / "report" / "curve.png").stat().st_size > 0
    summary = result["summary"]["logistic_regression"]["20"]
    # the shifted site is corrected on its other patients
    assert summary["macro_f1_after"] > summary["macro_f1_before"]
