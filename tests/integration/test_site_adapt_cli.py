"""``hemascope site adapt`` end to end on real cells of a laboratory (Johns Hopkins, grouped by patient)
against the committed bundle: a profile file that loads and fits that bundle, a report, and the myeloblast
rule; usage errors exit 2 with one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from itertools import chain, zip_longest
from pathlib import Path

import pytest

from hemascope.bundle import load_bundle
from hemascope.data import REPO_ROOT
from hemascope.site.profile import SiteProfile

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")
PER_CLASS = 10


@pytest.fixture(scope="module")
def lab(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 cells per class from jhu-cellavision (symlinks), taken from as many patients as possible."""
    source = data_dir / "jhu-cellavision"
    root = tmp_path_factory.mktemp("adapt") / "lab"
    with (source / "manifest.csv").open(newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    chosen = []
    for cls in CLASSES:
        by_patient: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            if row["class"] == cls:
                by_patient.setdefault(row["patient"], []).append(row)
        spread = [r for r in chain.from_iterable(zip_longest(*by_patient.values())) if r is not None]
        chosen += spread[:PER_CLASS]
    for row in chosen:
        target = root / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source / row["file"])
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return root


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hemascope", "site", "adapt", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT, check=False
    )


@pytest.mark.slow
def test_site_adapt_end_to_end(lab: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles" / "jhu-lab"
    done = _run("--bundle", BUNDLE, "--data", f"jhu={lab}", "--out", out, "--report", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    path = out.with_name("jhu-lab.npz")
    assert f"profile: {path}" in done.stdout
    profile = SiteProfile.load(path)
    bundle = load_bundle(BUNDLE)
    profile.check_bundle(bundle.manifest)
    assert profile.site == "jhu" and set(profile.models) == set(bundle.models)
    summary = profile.summary
    assert summary["counts"] == dict.fromkeys(CLASSES, PER_CLASS)
    assert summary["grouped_by_patient"] and summary["patients"] >= 5
    for name, model in summary["models"].items():
        before, after = model["baseline"], model["after"]
        assert after["myeloblast_sensitivity"] >= before["myeloblast_sensitivity"], name
        if profile.models[name].adapter != "none" or model["chosen"].endswith("bias"):
            assert after["macro_f1"] > before["macro_f1"], name
    report = tmp_path / "report"
    for name in ("adapt.md", "adapt.json", "adapt.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    assert (
        json.loads((report / "adapt.json").read_text())["bundle"]["version"] == bundle.manifest.bundle_version
    )

    # the bundle validated with the profile, as the classifier applies it
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("models: all\ncriteria:\n  - {metric: cells_per_class, min: 10}\n")
    command = [sys.executable, "-m", "hemascope", "site", "validate", "--bundle", str(BUNDLE)]
    command += ["--data", f"jhu={lab}", "--criteria", str(criteria), "--out", str(tmp_path / "validation")]
    command += ["--profile", str(path), "--replicates", "100"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    checked = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT, check=False
    )
    assert checked.returncode == 0, checked.stderr
    validation = json.loads((tmp_path / "validation" / "validation.json").read_text())
    assert validation["site_profile"]["path"] == str(path)
    assert "Site profile:" in (tmp_path / "validation" / "report.md").read_text()
    for name, model in validation["models"].items():
        assert model["abstain_threshold"] == profile.models[name].abstain_threshold
        expected = summary["models"][name]["baseline"]["myeloblast_sensitivity"]
        assert model["myeloblast"]["sensitivity"]["value"] >= expected - 1e-9, name


def test_usage_errors_are_one_line_and_exit_2(lab: Path, tmp_path: Path) -> None:
    stray = tmp_path / "stray"
    (stray / "lymphocyte").mkdir(parents=True)
    (stray / "myeloblast").mkdir()
    (stray / "myeloblast" / "a.jpg").symlink_to(next((lab / "myeloblast").iterdir()).resolve())
    (tmp_path / "folder.npz").mkdir()
    cases = [
        (("--data", str(lab), "--out", str(tmp_path / "folder.npz")), "is a directory"),
        (("--data", str(lab), "--out", str(tmp_path / "bad name")), "site profile name"),
        (("--data", str(stray), "--out", str(tmp_path / "p")), "not classes of the bundle"),
    ]
    for args, message in cases:
        done = _run("--bundle", BUNDLE, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
