"""The classifier core applies a site profile per call, exactly as the profile declares, and refuses
unknown, foreign or damaged profiles with the right status while the bundle keeps serving."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from hemascope.bundle import BundleError, load_bundle
from hemascope.errors import HemascopeError
from services.classifier.core import ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from tests.site_profile_fixtures import ProfileSetup, profile_setup, site_cells

__all__ = ["profile_setup"]
X, Y = site_cells(40, seed=11)


def make_core(setup: ProfileSetup, profiles: Path | None = None) -> ClassifierCore:
    settings = ClassifierSettings(
        bundle=setup.bundle, site_profiles=profiles or setup.profiles, metrics_port=None, max_embeddings=64
    )
    core = ClassifierCore(settings)
    core.load()
    return core


@pytest.fixture
def core(profile_setup: ProfileSetup) -> Iterator[ClassifierCore]:
    made = make_core(profile_setup)
    yield made
    made.close()


def inputs() -> list[EmbeddingInput]:
    return [EmbeddingInput(row) for row in X]


def test_profile_changes_probabilities_as_declared(core: ClassifierCore, profile_setup: ProfileSetup) -> None:
    plain = core.classify(inputs())
    adapted = core.classify(inputs(), site_profile="lab-a")
    assert (plain.site_profile, adapted.site_profile) == ("", "lab-a")
    bundle = load_bundle(profile_setup.bundle)
    profile = profile_setup.profile
    scaled = bundle.scale(X)
    for before, after in zip(plain.outputs, adapted.outputs, strict=True):
        correction = profile.models[after.name]
        _, expected = profile.proba(bundle, after.name, scaled)
        np.testing.assert_allclose(after.probabilities, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(before.probabilities, bundle.models[after.name].proba(scaled), atol=1e-12)
        assert not np.allclose(before.probabilities, after.probabilities)
        # the site's thresholds and OOD reference decide the referral
        np.testing.assert_array_equal(
            np.isin(after.refer_reason, (1, 3)), after.confidence < correction.abstain_threshold
        )
        assert profile.ood is not None
        np.testing.assert_allclose(after.ood_score, profile.ood.score(scaled, after.labels))
        np.testing.assert_array_equal(after.out_of_distribution, after.ood_score > correction.ood_threshold)
    # the profile was fitted on this site's shift: it answers these cells better than the bundle alone
    correct = [float((o.labels == Y).mean()) for o in adapted.outputs]
    assert min(correct) > max(float((o.labels == Y).mean()) for o in plain.outputs) - 1e-9
    assert np.mean(correct) > np.mean([float((o.labels == Y).mean()) for o in plain.outputs])


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("nowhere", grpc.StatusCode.NOT_FOUND, "UNKNOWN_SITE_PROFILE"),
        ("other-bundle", grpc.StatusCode.FAILED_PRECONDITION, "SITE_PROFILE_BUNDLE_MISMATCH"),
        ("damaged", grpc.StatusCode.FAILED_PRECONDITION, "BAD_SITE_PROFILE"),
        ("../lab-a", grpc.StatusCode.INVALID_ARGUMENT, "BAD_SITE_PROFILE_NAME"),
    ],
)
def test_bad_profiles_are_refused_and_the_bundle_keeps_serving(
    core: ClassifierCore, name: str, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(HemascopeError) as caught:
        core.classify(inputs(), site_profile=name)
    assert (caught.value.code, caught.value.reason) == (code, reason), caught.value.message
    assert core.classify(inputs(), site_profile="lab-a").site_profile == "lab-a"
    assert core.served.profiles.names == ["lab-a"]


def test_profiles_reload_with_the_bundle(profile_setup: ProfileSetup, tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    core = make_core(profile_setup, folder)
    try:
        with pytest.raises(HemascopeError) as caught:
            core.classify(inputs(), site_profile="lab-a")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        shutil.copy(profile_setup.profiles / "lab-a.npz", folder / "lab-b.npz")
        core.reload()
        assert core.classify(inputs(), site_profile="lab-b").site_profile == "lab-b"
    finally:
        core.close()


def test_a_missing_profile_directory_fails_the_load(profile_setup: ProfileSetup, tmp_path: Path) -> None:
    core = ClassifierCore(
        ClassifierSettings(bundle=profile_setup.bundle, site_profiles=tmp_path / "absent", metrics_port=None)
    )
    with pytest.raises(BundleError, match="site-profile directory"):
        core.load()
