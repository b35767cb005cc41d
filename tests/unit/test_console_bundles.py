"""The console's bundle comparison without a gateway: which folders are bundles, which report belongs to
which bundle, and how two bundles' metrics differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console import bundles
from tests.bundle_fixtures import make_bundles


def test_only_classifier_bundles_are_listed_and_only_listed_names_load(tmp_path: Path) -> None:
    models, reports = make_bundles(tmp_path)
    assert bundles.list_bundles(models) == ["lab-a", "lab-b"]
    assert bundles.list_bundles(tmp_path / "missing") == []
    for name in ("detector-x", "../models/lab-a", "", "lab-c"):
        with pytest.raises(KeyError):
            bundles.load_bundle(models, reports, name)
    b = bundles.load_bundle(models, reports, "lab-b")
    assert b.report == "lab-b" and b.card.startswith("# Model card <b>lab B</b>")


def test_a_report_is_found_by_its_bundle_path_else_by_the_training_command(tmp_path: Path) -> None:
    models, reports = make_bundles(tmp_path)
    (reports / "lab-b").rename(reports / "elsewhere")
    assert bundles.load_bundle(models, reports, "lab-b").report == "elsewhere"  # results name models/lab-b
    results = json.loads((reports / "elsewhere" / "results.json").read_text())
    results["bundle"]["path"] = "somewhere/else"
    (reports / "elsewhere" / "results.json").write_text(json.dumps(results))
    assert bundles.load_bundle(models, reports, "lab-b").report == ""  # nothing names it any more
    manifest = json.loads((models / "lab-b" / "manifest.json").read_text())
    command = "hemascope train classifiers --out models/lab-b --report reports/elsewhere"
    manifest["training"]["command"] = command
    (models / "lab-b" / "manifest.json").write_text(json.dumps(manifest))
    assert bundles.load_bundle(models, reports, "lab-b").report == "elsewhere"


def test_two_bundles_differ_where_their_cards_and_metrics_do(tmp_path: Path) -> None:
    models, reports = make_bundles(tmp_path)
    a, b = (bundles.load_bundle(models, reports, n) for n in ("lab-a", "lab-b"))
    differing = {f.name for f in bundles.facts(a, b) if f.differs}
    assert differing == {"bundle version", "training sites", "training report"}
    overall = {r.keys: r for r in bundles.compare(bundles.overall(a.results), bundles.overall(b.results))}
    assert overall[("svm", "accuracy")].state == "lower"
    assert overall[("svm", "accuracy")].delta == pytest.approx(-0.05)
    assert overall[("svm", "macro_f1")].state == "same"
    assert overall[("kmeans", "accuracy")].state == "missing" and overall[("kmeans", "accuracy")].b is None
    assert {k[1] for k in overall} == {m for m, _ in bundles.OVERALL}
    classes = bundles.compare(bundles.per_class(a.results), bundles.per_class(b.results))
    changed = {r.keys for r in classes if r.state not in ("same", "missing")}
    assert changed == {("svm", "myeloblast", "f1")}
    compared = bundles.compare(bundles.per_source(a.results), bundles.per_source(b.results))
    sources = {r.keys: r for r in compared}
    assert sources[("held-out test", "johns-hopkins", "svm", "accuracy")].state == "higher"
    assert ("left out of training", "munich", "svm", "macro_f1") in sources
    assert ("evaluation only", "probe-pbc-neutrophil:barcelona", "svm", "referred") in sources
    assert [r.state for r in sources.values() if r.keys[2] != "kmeans"].count("higher") == 1


def test_a_row_is_the_same_within_the_shown_precision() -> None:
    assert bundles.Row(("m",), 0.9, 0.9004).state == "same"
    assert bundles.Row(("m",), 0.9, 0.9006).state == "higher"
    assert bundles.Row(("m",), None, None).state == "same"
    assert bundles.Row(("m",), 0.9, None).state == "missing"
