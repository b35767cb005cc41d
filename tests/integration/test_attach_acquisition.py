"""``hemascope train acquisition``: a bundle trained without an acquisition reference gets one fitted on its
own split (a new version, the models untouched); sources that are not the bundle's are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hemascope.bundle import load_bundle
from hemascope.errors import FailedPrecondition
from hemascope.training.attach import attach_acquisition
from hemascope.training.multisource import load_sourced
from hemascope.training.sources import load_spec
from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle


def _bundle(root: Path, split: dict[str, int]) -> Path:
    build_synthetic_bundle(root, SyntheticSpec(version="before", models=("logistic_regression",)))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["training"]["split"] = split | {"seed": 50}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_reference_fitted_on_the_bundles_split_as_a_new_version(three_labs: Path, tmp_path: Path) -> None:
    specs = load_spec(three_labs)
    split = load_sourced(specs).split(50)
    sizes = {"fit": len(split.fit), "calib": len(split.calib), "test": len(split.test)}
    root = _bundle(tmp_path / "bundle", sizes)
    model_hash = load_bundle(root).manifest.models["logistic_regression"].sha256
    result = attach_acquisition(root, specs, cache_dir=tmp_path / "cache", log=lambda _line: None)
    loaded = load_bundle(root)
    assert loaded.site is not None
    assert loaded.manifest.bundle_version == result["bundle_version"] != "before"
    assert result["previous_version"] == "before"
    assert loaded.manifest.models["logistic_regression"].sha256 == model_hash
    assert set(result["acquisition"]["atypical_rate_true_class"]["test"]) == {
        "barcelona",
        "munich",
        "johns-hopkins",
    }


def test_sources_that_do_not_split_like_the_bundle_are_refused(three_labs: Path, tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle", {"fit": 1, "calib": 1, "test": 1})
    before = (root / "manifest.json").read_text()
    with pytest.raises(FailedPrecondition, match="not the bundle's sources"):
        attach_acquisition(root, load_spec(three_labs), cache_dir=None, log=lambda _line: None)
    assert (root / "manifest.json").read_text() == before
