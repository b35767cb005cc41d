"""Acceptance criteria: strict parsing with clear errors, and pass/fail verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hemascope.data import REPO_ROOT
from hemascope.site.criteria import (
    METRICS,
    CriteriaError,
    evaluate_criteria,
    load_criteria,
    parse_criteria,
)

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
KINDS = {"logistic_regression": "sklearn", "svm": "sklearn", "kmeans": "kmeans"}


def _estimate(value: float, low: float, high: float) -> dict[str, Any]:
    return {"value": value, "low": low, "high": high, "method": "wilson"}


def _model(sensitivity: float = 0.95, low: float = 0.91, ece: float = 0.05) -> dict[str, Any]:
    return {
        "per_class": {
            c: {"sensitivity": _estimate(0.9, 0.8, 0.95), "specificity": _estimate(0.98, 0.95, 0.99)}
            for c in CLASSES
        },
        "myeloblast": {
            "sensitivity": _estimate(sensitivity, low, 0.99),
            "specificity": _estimate(0.97, 0.94, 0.99),
            "auc": _estimate(0.99, 0.98, 1.0),
        },
        "calibration": {"ece": ece},
        "referral": {"rate": _estimate(0.1, 0.07, 0.14)},
        "all": {"accuracy": _estimate(0.9, 0.85, 0.93), "macro_f1": 0.89},
        "answered": {"accuracy": _estimate(0.95, 0.92, 0.97), "macro_f1": 0.94},
    }


DATA = {"counts": dict.fromkeys(CLASSES, 40), "patients": 12}
DOCUMENT = {
    "models": ["logistic_regression"],
    "criteria": [
        {"metric": "cells_per_class", "min": 30},
        {"metric": "myeloblast_sensitivity", "bound": "lower", "min": 0.90},
        {"metric": "class_sensitivity", "min": 0.85, "classes": ["myeloblast"]},
        {"metric": "ece", "max": 0.10},
    ],
}


def _verdicts(model: dict[str, Any], document: dict[str, Any] = DOCUMENT) -> list[dict[str, Any]]:
    criteria = parse_criteria(document, "test.yaml")
    chosen = criteria.chosen_models(KINDS)
    return evaluate_criteria(criteria, DATA, dict.fromkeys(chosen, model), CLASSES)


def test_criteria_that_hold_pass() -> None:
    verdicts = _verdicts(_model())
    assert len(verdicts) == 5 + 1 + 1 + 1  # cells per class, then the model's three
    assert all(v["passed"] for v in verdicts)
    assert verdicts[0]["model"] == "(data)" and verdicts[0]["class"] == "basophil"
    assert verdicts[5]["criterion"] == "myeloblast sensitivity (lower 95% bound) >= 0.9"
    assert verdicts[5]["observed"] == pytest.approx(0.91)


def test_the_lower_bound_decides_not_the_point_estimate() -> None:
    verdicts = _verdicts(_model(sensitivity=0.95, low=0.85, ece=0.2))
    failed = {(v["metric"], v["model"]) for v in verdicts if not v["passed"]}
    assert failed == {("myeloblast_sensitivity", "logistic_regression"), ("ece", "logistic_regression")}


def test_an_unmeasurable_metric_fails() -> None:
    model = _model()
    model["myeloblast"]["sensitivity"] = {"value": None, "low": None, "high": None, "n": 0, "k": 0}
    verdicts = _verdicts(model)
    unmeasured = [v for v in verdicts if v["metric"] == "myeloblast_sensitivity"]
    assert unmeasured[0]["observed"] is None and not unmeasured[0]["passed"]


def test_model_sets() -> None:
    criteria = parse_criteria({"criteria": [{"metric": "ece", "max": 0.1}]})
    assert criteria.chosen_models(KINDS) == ["logistic_regression", "svm"]  # supervised by default
    every = parse_criteria({"models": "all", "criteria": [{"metric": "ece", "max": 0.1}]})
    assert every.chosen_models(KINDS) == list(KINDS)
    named = parse_criteria({"models": ["xgboost"], "criteria": [{"metric": "ece", "max": 0.1}]}, "c.yaml")
    with pytest.raises(CriteriaError, match=r"c\.yaml.*\['xgboost'\] are not in the bundle"):
        named.chosen_models(KINDS)


def test_unknown_classes_are_refused_against_the_bundle() -> None:
    criteria = parse_criteria({"criteria": [{"metric": "class_sensitivity", "min": 0.8, "classes": ["eos"]}]})
    with pytest.raises(CriteriaError, match=r"unknown classes \['eos'\]"):
        criteria.check_classes(CLASSES)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "expected a mapping"),
        ({"criteria": []}, "non-empty list"),
        ({"criteria": [{"metric": "ece", "max": 0.1}], "extra": 1}, r"unknown keys \['extra'\]"),
        ({"criteria": [{"metric": "speed", "min": 1}]}, "unknown metric 'speed'"),
        ({"criteria": [{"metric": "ece"}]}, "exactly one of 'min' or 'max'"),
        ({"criteria": [{"metric": "ece", "min": 0.1, "max": 0.2}]}, "exactly one of 'min' or 'max'"),
        ({"criteria": [{"metric": "ece", "max": "low"}]}, "must be a number"),
        ({"criteria": [{"metric": "ece", "max": True}]}, "must be a number"),
        ({"criteria": [{"metric": "accuracy", "min": 90}]}, r"fraction in \[0, 1\]"),
        ({"criteria": [{"metric": "cells_per_class", "min": 2.5}]}, "whole number"),
        ({"criteria": [{"metric": "ece", "max": 0.1, "bound": "lower"}]}, "has no interval"),
        ({"criteria": [{"metric": "accuracy", "min": 0.9, "bound": "middle"}]}, "point, lower or upper"),
        ({"criteria": [{"metric": "ece", "max": 0.1, "classes": ["basophil"]}]}, "per-class metrics"),
        ({"criteria": [{"metric": "ece", "max": 0.1, "units": 1}]}, r"unknown keys \['units'\]"),
        ({"criteria": ["ece <= 0.1"]}, "each criterion is a mapping"),
        ({"models": "best", "criteria": [{"metric": "ece", "max": 0.1}]}, "'models' must be"),
        ({"target_sensitivity": 1.5, "criteria": [{"metric": "ece", "max": 0.1}]}, "target_sensitivity"),
    ],
)
def test_malformed_criteria_say_what_is_wrong(document: Any, message: str) -> None:
    with pytest.raises(CriteriaError, match=message):
        parse_criteria(document, "bad.yaml")


def test_unreadable_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CriteriaError, match="cannot read criteria file"):
        load_criteria(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("criteria: [metric: ece\n")
    with pytest.raises(CriteriaError, match="not valid YAML"):
        load_criteria(broken)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(CriteriaError, match="criteria file"):
        load_criteria(binary)


def test_the_shipped_default_parses_and_uses_known_metrics() -> None:
    criteria = load_criteria(REPO_ROOT / "configs" / "site" / "acceptance.yaml")
    assert criteria.models == "supervised"
    assert {c.metric for c in criteria.criteria} <= set(METRICS)
    assert any(c.metric == "myeloblast_sensitivity" and c.bound == "lower" for c in criteria.criteria)
