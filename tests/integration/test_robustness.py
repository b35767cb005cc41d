"""Cross-source evaluation, augmentation, OOD referral and the robustness study, end to end on a few real
images (symlinks into tmp_path): the neutrophil probe is scored, never trained on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hemascope.bundle import OOD_FILE, load_bundle
from hemascope.datasets import CLASSES
from hemascope.training.card import write_model_card
from hemascope.training.evaluate import evaluate_bundle
from hemascope.training.report import render_report
from hemascope.training.sources import spec_from_option
from hemascope.training.study import StudyConfig, run_study
from hemascope.training.train import TrainConfig, train_classifiers

PER_CLASS = 14
PROBE = 8


@pytest.fixture(scope="module")
def cells(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("robust")
    for cls in CLASSES:
        (root / "data" / "train" / cls).mkdir(parents=True)
        for path in sorted((data_dir / "bloodcells-5class" / "train" / cls).glob("*.jpg"))[:PER_CLASS]:
            (root / "data" / "train" / cls / path.name).symlink_to(path)
    (root / "probe" / "seg_neutrophil").mkdir(parents=True)
    for path in sorted((data_dir / "probe-pbc-neutrophil" / "seg_neutrophil").glob("*.jpg"))[:PROBE]:
        (root / "probe" / "seg_neutrophil" / path.name).symlink_to(path)
    return root / "data", root / "probe"


@pytest.fixture(scope="module")
def trained(
    cells: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    data, probe = cells
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    config = TrainConfig(
        sources=[
            spec_from_option(str(data)),
            spec_from_option(f"barcelona-probe={probe}", role="evaluation"),
        ],
        out=out,
        backbone="efficientnet_lite0",  # the study's frozen backbone serves every preprocessing option
        models=["logistic_regression", "kmeans"],
        cv_folds=2,
        progress=False,
        log=lambda _: None,
        augment=1,
    )
    return out, train_classifiers(config)


def test_augmented_copies_join_the_fit_part_only(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    split = results["split"]
    assert split["fit_augmented"] == split["fit"]  # one copy of each fit image, none of calib or test
    assert split["fit"] + split["calib"] + split["test"] == 5 * PER_CLASS
    assert results["augmentation"]["copies"] == 1 and results["augmentation"]["images"] == split["fit"]


def test_probe_and_referral_are_reported_per_model(trained: tuple[Path, dict[str, Any]]) -> None:
    _, results = trained
    assert results["dataset"]["evaluation_images"] == PROBE
    assert results["dataset"]["counts"]["barcelona-probe:barcelona-probe"] == {"seg_neutrophil": PROBE}
    for name, model in results["models"].items():
        probe = model["referral"]["probe"]
        assert sum(probe["called"]["seg_neutrophil"].values()) == PROBE, name
        assert probe["accuracy"] == probe["called"]["seg_neutrophil"]["seg_neutrophil"] / PROBE
        assert model["referral"]["ood_threshold"] > 0
        assert 0 <= model["referral"]["test"]["coverage"] <= 1


def test_bundle_holds_the_ood_model_and_evaluate_scores_the_probe(
    trained: tuple[Path, dict[str, Any]], cells: tuple[Path, Path]
) -> None:
    out, results = trained
    bundle = load_bundle(out)
    assert bundle.ood is not None and (out / OOD_FILE).is_file()
    for name, model in bundle.models.items():
        assert model.entry.ood_threshold == results["models"][name]["referral"]["ood_threshold"]
    _, probe = cells
    result = evaluate_bundle(out, [spec_from_option(f"barcelona-probe={probe}")], progress=False)
    assert result["data"]["images"] == PROBE
    lr_probe = result["per_site"]["logistic_regression"]["barcelona-probe"]
    trained_probe = results["models"]["logistic_regression"]["referral"]["probe_per_site"]
    trained_probe = trained_probe["barcelona-probe:barcelona-probe"]
    assert lr_probe["called"] == trained_probe["called"]  # the bundle serves what training measured
    for key in ("accuracy", "referred", "errors_referred"):
        assert lr_probe[key] == pytest.approx(trained_probe[key]), key
    assert result["models"]["logistic_regression"]["referral"]["ood_available"]


def test_report_and_model_card_show_the_probe_next_to_same_source_metrics(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, results = trained
    markdown = render_report(results, tmp_path).read_text()
    assert "## Cross-source probe" in markdown
    assert (tmp_path / "probe_calls.png").is_file()
    card = write_model_card(results, out, tmp_path).read_text()
    assert "## Held-out metrics" in card and "Evaluation-only sets" in card
    assert "barcelona-probe:barcelona-probe" in card


def test_study_writes_its_table_and_reuses_its_cache(cells: tuple[Path, Path], tmp_path: Path) -> None:
    data, probe = cells
    config = StudyConfig(
        data=data,
        probe=probe,
        out=tmp_path / "out",
        cache=tmp_path / "cache",
        options=["plain"],
        augment=1,
        log=lambda _: None,
    )
    study = run_study(config)
    assert [(r["option"], r["augment"]) for r in study["rows"]] == [("plain", 0), ("plain", 1)]
    assert study["cache"]["embedded"] == 4  # duplicates, data, probe, augmented copies
    for name in ("study.md", "study.json", "study.png"):
        assert (tmp_path / "out" / name).is_file()
    first = json.loads((tmp_path / "out" / "study.json").read_text())
    rerun = run_study(
        StudyConfig(
            data=data,
            probe=probe,
            out=tmp_path / "out",
            cache=tmp_path / "cache",
            options=["plain"],
            augment=1,
            log=lambda _: None,
        )
    )
    # duplicates, augmented copies, and data + probe once per row (the off and the on row)
    assert rerun["cache"]["embedded"] == 0 and rerun["cache"]["cache_hits"] == 6
    for a, b in zip(first["rows"], rerun["rows"], strict=True):
        assert a["macro_f1"] == b["macro_f1"] and a["probe_accuracy"] == b["probe_accuracy"]
    assert not study["rows"][0]["fpr_above_plain"]  # the baseline never exceeds itself


def test_study_cli_prints_the_choice_and_refuses_unknown_options(
    cells: tuple[Path, Path], tmp_path: Path
) -> None:
    data, probe = cells
    command = [
        sys.executable,
        "-m",
        "hemascope",
        "study",
        "robustness",
        "--data",
        str(data),
        "--probe",
        str(probe),
    ]
    command += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    refused = subprocess.run(
        [*command, "--options", "nope"], check=False, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "unknown preprocessing options" in refused.stderr
    done = subprocess.run(
        [*command, "--options", "plain", "--augment", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert "chosen" in last
    assert "chosen:" in done.stdout
    assert np.isfinite(json.loads((tmp_path / "out" / "study.json").read_text())["rows"][0]["macro_f1"])
