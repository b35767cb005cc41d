"""A synthetic bundle with an OOD model and a directory of site profiles for it, shared by the classifier
tests of site profiles: ``lab-a`` (fitted on shifted cells), ``other-bundle`` (made for another bundle) and
``damaged`` (a truncated file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from hemascope.bundle import load_bundle
from hemascope.site.adapt import fit_profile
from hemascope.site.profile import SiteProfile
from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle, synthetic_data

SPEC = SyntheticSpec(
    version="sp-v1",
    models=("logistic_regression", "svm"),
    ood_quantile=0.975,
    abstain_thresholds={"logistic_regression": 0.6, "svm": 0.6},
)
SHIFT = 1.0


def site_cells(n: int, seed: int = 5) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Raw embeddings of a site whose acquisition moves every feature by ``SHIFT``."""
    x, y = synthetic_data(SPEC, n)
    rng = np.random.default_rng(seed)
    return (x + rng.normal(scale=0.3, size=x.shape) + SHIFT).astype(np.float32), y


@dataclass(frozen=True)
class ProfileSetup:
    bundle: Path
    profiles: Path
    profile: SiteProfile


@pytest.fixture(scope="module")
def profile_setup(tmp_path_factory: pytest.TempPathFactory) -> ProfileSetup:
    root = tmp_path_factory.mktemp("site-profiles")
    build_synthetic_bundle(root / "bundle", SPEC)
    build_synthetic_bundle(root / "other", SyntheticSpec(version="sp-v2", models=SPEC.models, seed=1))
    folder = root / "profiles"
    bundle, other = load_bundle(root / "bundle"), load_bundle(root / "other")
    x, y = site_cells(150)
    patients = [f"P{i % 10}" for i in range(len(y))]
    profile = fit_profile(bundle, bundle.scale(x), y, patients, site="lab-a")
    profile.save(folder / "lab-a")
    fit_profile(other, other.scale(x), y, patients, site="lab-a").save(folder / "other-bundle")
    damaged = profile.save(folder / "damaged")
    damaged.write_bytes(damaged.read_bytes()[:300])
    return ProfileSetup(root / "bundle", folder, SiteProfile.load(folder / "lab-a.npz"))
