"""Training and evaluation end to end on a small three-laboratory dataset (symlinks into tmp_path): sites,
patients and duplicates respected, metrics per site and leave-one-source-out, bundle, report and CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hemascope.bundle import BundleError, load_bundle
from hemascope.datasets import CLASSES
from hemascope.training.evaluate import evaluate_bundle
from hemascope.training.sources import load_spec
from hemascope.training.train import TrainConfig, train_classifiers
from tests.multisite_fixtures import PER_CLASS, PROBE

SITES = {"barcelona", "munich", "johns-hopkins"}
ALL_MODELS = {"logistic_regression", "svm", "random_forest", "xgboost", "kmeans"}


@pytest.fixture(scope="module")
def trained(three_labs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    config = TrainConfig(
        sources=load_spec(three_labs),
        out=out,
        # The frozen ImageNet backbone: the shipped fine-tuned one has seen some of these images, and its
        # leakage check refuses a split that would test on them.
        backbone="efficientnet_lite0",
        cv_folds=2,
        progress=False,
        log=lambda _: None,
        loso_models=["logistic_regression", "kmeans"],
    )
    return out, train_classifiers(config)


def test_training_writes_a_loadable_bundle_with_every_model(trained: tuple[Path, dict[str, Any]]) -> None:
    out, results = trained
    bundle = load_bundle(out)
    assert set(bundle.models) == ALL_MODELS
    assert bundle.manifest.dimension == 1280
    assert bundle.manifest.classes == list(CLASSES)
    assert bundle.manifest.data_fingerprint == results["dataset"]["fingerprint"]
    assert {s["name"] for s in bundle.manifest.training["sources"]} == {"cells", "jhu", "probe"}
    for name, model in results["models"].items():
        test = model["test"]
        assert 0 <= test["accuracy"] <= 1, name
        assert len(test["confusion_matrix"]) == 5
        assert model["calibration"]["temperature"] > 0
        assert "accuracy" in model["cv"]
    assert "ari" in results["models"]["kmeans"]["test"]
    assert len(results["models"]["xgboost"]["feature_importance"]) == 20
    assert results["dataset"]["unknown_folders"][0].endswith("lymphocyte")


def test_sites_patients_and_duplicates_shape_the_split(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    dataset = results["dataset"]
    assert dataset["training_sites"] == ["barcelona", "munich", "johns-hopkins"]
    assert dataset["images"] == 5 * PER_CLASS + 1 + 5 * PER_CLASS  # bloodcells (+ one exact copy), jhu
    assert dataset["evaluation_images"] == PROBE
    assert dataset["patients"] >= 2
    assert results["duplicates"]["exact_groups"] >= 1
    assert results["duplicates"]["images_in_merged_groups"] >= 2
    split = results["split"]
    assert split["train"] + split["test"] == dataset["images"]
    assert split["fit"] + split["calib"] == split["train"]
    assert split["stratified_by"] == "class and site"


def test_metrics_per_site_and_on_the_evaluation_only_set(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    for name, model in results["models"].items():
        per_site = model["referral"]["test_per_site"]
        assert set(per_site) == SITES, name
        assert per_site["munich"]["classes"] == ["myeloblast", "seg_neutrophil"]
        assert per_site["barcelona"]["myeloblast_sensitivity"] is None
        probe = model["referral"]["probe_per_site"]
        assert set(probe) == {"probe:barcelona"} and probe["probe:barcelona"]["n"] == PROBE
    assert results["models"]["logistic_regression"]["test"]["accuracy"] >= 0.4  # chance: 0.2


def test_leave_one_source_out_holds_each_site_out(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    loso = results["loso"]
    assert loso["models"] == ["logistic_regression", "kmeans"]
    assert "frozen" in loso["embeddings"]
    folds = loso["folds"]
    assert set(folds) == SITES
    assert folds["barcelona"]["n_test"] == 3 * PER_CLASS + 1 + PROBE  # its probe is Barcelona's too
    assert folds["munich"]["n_test"] == 2 * PER_CLASS
    assert folds["johns-hopkins"]["n_test"] == 5 * PER_CLASS
    for site, fold in folds.items():
        held_out_training = fold["n_test"] - (PROBE if site == "barcelona" else 0)
        assert fold["n_fit"] + fold["n_calib"] + held_out_training == results["dataset"]["images"], site
        assert set(fold["models"]) == {"logistic_regression", "kmeans"}
    munich = folds["munich"]["models"]["logistic_regression"]
    assert munich["myeloblast_sensitivity"] is not None and munich["classes"] == [
        "myeloblast",
        "seg_neutrophil",
    ]


def test_evaluate_scores_every_model_per_dataset_and_site(
    trained: tuple[Path, dict[str, Any]], three_labs: Path
) -> None:
    out, results = trained
    result = evaluate_bundle(out, load_spec(three_labs), progress=False)
    assert set(result["models"]) == ALL_MODELS
    assert set(result["per_site"]["svm"]) == SITES
    assert set(result["per_dataset"]["svm"]) == {"cells", "jhu", "probe"}
    assert result["data"]["trained_on"] == ["cells", "jhu"]  # scored, but not held out
    probe = result["per_dataset"]["logistic_regression"]["probe"]
    trained_probe = results["models"]["logistic_regression"]["referral"]["probe_per_site"]["probe:barcelona"]
    assert probe["accuracy"] == pytest.approx(
        trained_probe["accuracy"]
    )  # the bundle serves what training measured
    assert probe["referred"] == pytest.approx(trained_probe["referred"])


def test_evaluate_cli_prints_only_json_with_sites(
    trained: tuple[Path, dict[str, Any]], three_labs: Path
) -> None:
    out, _ = trained
    jhu = three_labs.parent / "jhu"
    command = [sys.executable, "-m", "hemascope", "evaluate", "--bundle", str(out), "--data", f"jhu={jhu}"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, check=True)
    line = json.loads(done.stdout)  # stdout is the JSON object and nothing else
    assert "macroF1" in done.stderr  # the table went to stderr
    for name in ("logistic_regression", "kmeans"):
        keys = set(line["models"][name])
        assert keys >= {"accuracy", "macro_f1", "roc_auc", "malignant_sensitivity", "malignant_specificity"}
        assert set(line["models"][name]["per_site"]) == {"jhu"}


def test_tampered_bundle_is_refused(trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(out, copy)
    target = copy / "logistic_regression.skops"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"logistic_regression\.skops"):
        load_bundle(copy)


def test_train_cli_writes_bundle_audits_report_and_card(three_labs: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "bundle", tmp_path / "report"
    command = [sys.executable, "-m", "hemascope", "train", "classifiers", "--sources", str(three_labs)]
    options = ["--out", str(out), "--report", str(report), "--models", "logistic_regression,kmeans"]
    options += ["--backbone", "efficientnet_lite0"]
    subprocess.run([*command, *options, "--cv-folds", "2"], capture_output=True, timeout=900, check=True)
    assert set(load_bundle(out).models) == {"logistic_regression", "kmeans"}
    markdown = (report / "report.md").read_text()
    for section in ("## Leave-one-source-out", "## Per site: held-out part", "Table I", "Shortcut audit of"):
        assert section in markdown, section
    for name in ("cells", "jhu"):
        audit = (report / f"audit-{name}.md").read_text()
        assert "## Duplicates" in audit and "## Source-shortcut probe" in audit
    for link in [line.split("](")[1].split(")")[0] for line in markdown.splitlines() if "![" in line]:
        assert (report / link).is_file()
    card = (out / "MODEL_CARD.md").read_text()
    assert "## What is validated, and what is not" in card and "## Leave-one-source-out" in card


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--models", "lda"], "unknown models"),
        (["--sources", "missing.yaml"], "cannot read dataset spec"),
        ([], "no data"),
    ],
)
def test_train_cli_refuses_bad_input_in_one_line(tmp_path: Path, arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "hemascope", "train", "classifiers", "--out", str(tmp_path / "b")]
    if "--sources" not in arguments and arguments:
        arguments = [*arguments, "--data", str(tmp_path)]
    done = subprocess.run([*command, *arguments], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
