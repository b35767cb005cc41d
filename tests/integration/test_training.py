"""Training and evaluation end to end on a small real dataset built in tmp_path (symlinks, not copies)."""

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
from hemascope.training.train import TrainConfig, train_classifiers

PER_CLASS = 14


@pytest.fixture(scope="module")
def small_dataset(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    for cls in CLASSES:
        target = root / "train" / cls
        target.mkdir(parents=True)
        for path in sorted((data_dir / "bloodcells-5class" / "train" / cls).glob("*.jpg"))[:PER_CLASS]:
            (target / path.name).symlink_to(path)
    first = sorted((root / "train" / "basophil").iterdir())[0]
    shutil.copy(first, root / "train" / "basophil" / "copy_of_first.jpg")  # an exact duplicate
    (root / "train" / "lymphocyte").mkdir()  # not a class of ours: reported, not read
    return root


@pytest.fixture(scope="module")
def trained(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    config = TrainConfig(data=small_dataset, out=out, cv_folds=2, progress=False, log=lambda _: None)
    return out, train_classifiers(config)


def test_training_writes_a_loadable_bundle_with_every_model(trained: tuple[Path, dict[str, Any]]) -> None:
    out, results = trained
    bundle = load_bundle(out)
    assert set(bundle.models) == {"logistic_regression", "svm", "random_forest", "xgboost", "kmeans"}
    assert bundle.manifest.dimension == 1280
    assert bundle.manifest.classes == list(CLASSES)
    assert bundle.manifest.data_fingerprint == results["dataset"]["fingerprint"]
    for name, model in results["models"].items():
        test = model["test"]
        assert 0 <= test["accuracy"] <= 1, name
        assert len(test["confusion_matrix"]) == 5
        assert model["calibration"]["temperature"] > 0
        assert "accuracy" in model["cv"]
    assert "ari" in results["models"]["kmeans"]["test"]
    assert len(results["models"]["xgboost"]["feature_importance"]) == 20
    assert results["dataset"]["unknown_folders"][0].endswith("lymphocyte")


def test_duplicates_are_grouped_and_never_straddle(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    assert results["duplicates"]["exact_groups"] >= 1
    assert results["duplicates"]["images_in_merged_groups"] >= 2
    split = results["split"]
    assert split["train"] + split["test"] == 5 * PER_CLASS + 1
    assert split["fit"] + split["calib"] == split["train"]


def test_logistic_regression_learns_real_cells(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    assert results["models"]["logistic_regression"]["test"]["accuracy"] >= 0.6


def test_evaluate_scores_every_model_and_reports_unknown_folders(
    trained: tuple[Path, dict[str, Any]], small_dataset: Path
) -> None:
    out, _ = trained
    result = evaluate_bundle(out, small_dataset, progress=False)
    assert set(result["models"]) == {"logistic_regression", "svm", "random_forest", "xgboost", "kmeans"}
    assert result["data"]["unknown_folders"][0].endswith("lymphocyte")
    assert result["models"]["logistic_regression"]["accuracy"] > 0.8  # mostly its own training data


def test_evaluate_cli_json_line(trained: tuple[Path, dict[str, Any]], small_dataset: Path) -> None:
    out, _ = trained
    command = [
        sys.executable,
        "-m",
        "hemascope",
        "evaluate",
        "--bundle",
        str(out),
        "--data",
        str(small_dataset),
    ]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, check=True)
    last = json.loads(done.stdout)  # stdout is the JSON object and nothing else
    assert "macroF1" in done.stderr  # the table went to stderr
    for name in ("logistic_regression", "kmeans"):
        keys = set(last["models"][name])
        assert keys >= {"accuracy", "macro_f1", "roc_auc", "malignant_sensitivity", "malignant_specificity"}


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


def test_train_cli_writes_bundle_audit_and_report(small_dataset: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "bundle", tmp_path / "report"
    command = [sys.executable, "-m", "hemascope", "train", "classifiers", "--data", str(small_dataset)]
    options = ["--out", str(out), "--report", str(report), "--models", "logistic_regression,kmeans"]
    subprocess.run([*command, *options, "--cv-folds", "2"], capture_output=True, timeout=600, check=True)
    assert set(load_bundle(out).models) == {"logistic_regression", "kmeans"}
    markdown = (report / "report.md").read_text()
    assert "Table I" in markdown
    assert "shortcut probe" in markdown  # the audit's figure is quoted, not left out
    audit = (report / "audit.md").read_text()
    assert "## Duplicates" in audit
    assert "## Source-shortcut probe" in audit
    for link in [line.split("](")[1].split(")")[0] for line in markdown.splitlines() if "![" in line]:
        assert (report / link).is_file()


def test_train_cli_refuses_unknown_models(small_dataset: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hemascope", "train", "classifiers", "--data", str(small_dataset)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "b"), "--models", "lda"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown models" in done.stderr
