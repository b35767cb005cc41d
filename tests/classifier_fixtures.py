"""Synthetic model bundles shared by the classifier tests (tiny 8-d data, all five model kinds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle

#: v1 has an abstain threshold on the SVM so the abstain flag can be tested.
SPEC = SyntheticSpec(version="v1", abstain_thresholds={"svm": 0.8})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bundles built in tmp_path: "v1" (SPEC) and "v2" (another seed)."""
    root = tmp_path_factory.mktemp("bundles")
    build_synthetic_bundle(root / "v1", SPEC)
    build_synthetic_bundle(root / "v2", SyntheticSpec(version="v2", seed=1))
    return {"v1": root / "v1", "v2": root / "v2"}
