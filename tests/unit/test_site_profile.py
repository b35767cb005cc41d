"""Site profiles: the file round trip, refusal of another bundle, the myeloblast guard, and that a refit is
kept only when it raises the site's cross-validated macro-F1 (synthetic 8-d bundles with an OOD model)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.datasets import CLASSES
from hemascope.errors import InvalidArgument
from hemascope.site.adapt import AdaptSettings, fit_profile
from hemascope.site.corrections import myeloblast_boost
from hemascope.site.profile import ProfileError, ProfileMismatch, SiteProfile, check_name
from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle, synthetic_data

SPEC = SyntheticSpec(
    version="site-v1",
    models=("logistic_regression", "svm"),
    ood_quantile=0.975,
    abstain_thresholds={"logistic_regression": 0.6, "svm": 0.6},
)
M = CLASSES.index("myeloblast")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    root = tmp_path_factory.mktemp("site-bundle") / "b"
    build_synthetic_bundle(root, SPEC)
    return load_bundle(root)


def _site(bundle: LoadedBundle, shift: float, n: int = 200, seed: int = 5):  # type: ignore[no-untyped-def]
    """A site whose embeddings are the bundle's classes moved by ``shift`` (another acquisition)."""
    x, y = synthetic_data(SPEC, n)
    rng = np.random.default_rng(seed)
    site = x + rng.normal(scale=0.3, size=x.shape) + shift
    patients = [f"P{i % 12}" for i in range(len(y))]
    return bundle.scale(site), y, patients


@pytest.fixture(scope="module")
def shifted(bundle: LoadedBundle) -> tuple[SiteProfile, np.ndarray, np.ndarray]:
    scaled, y, patients = _site(bundle, 1.0)
    return fit_profile(bundle, scaled, y, patients, site="shifted"), scaled, y


def test_round_trip_keeps_every_figure(bundle: LoadedBundle, shifted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    profile, scaled, _ = shifted
    path = profile.save(tmp_path / "lab-a")
    assert path.name == "lab-a.npz"
    loaded = SiteProfile.load(path)
    assert loaded.meta() == profile.meta()
    assert loaded.ood is not None and profile.ood is not None
    np.testing.assert_array_equal(loaded.ood.precision, profile.ood.precision)
    for name in bundle.models:
        np.testing.assert_allclose(
            loaded.proba(bundle, name, scaled)[1], profile.proba(bundle, name, scaled)[1]
        )
    # the file is plain arrays: numpy reads it without pickle
    with np.load(path, allow_pickle=False) as data:
        assert "meta" in data.files


def test_damaged_profile_is_refused(tmp_path: Path, shifted) -> None:  # type: ignore[no-untyped-def]
    path = shifted[0].save(tmp_path / "lab")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ProfileError) as caught:
        SiteProfile.load(path)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_profile_for_another_bundle_is_refused(shifted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    profile = shifted[0]
    other = tmp_path / "other"
    build_synthetic_bundle(other, SyntheticSpec(version="site-v2", models=SPEC.models, ood_quantile=0.975))
    with pytest.raises(ProfileMismatch) as caught:
        profile.check_bundle(load_bundle(other).manifest)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "site-v1" in caught.value.message


def test_shifted_site_is_corrected_and_the_gain_is_measured(shifted) -> None:  # type: ignore[no-untyped-def]
    profile = shifted[0]
    for summary in profile.summary["models"].values():
        assert summary["chosen"] != "temperature"  # a label-changing refit was worth keeping
        assert summary["after"]["macro_f1"] > summary["baseline"]["macro_f1"]
        assert summary["gain"] > 0
    assert profile.ood is not None
    assert profile.summary["grouped_by_patient"] and profile.summary["folds"] == 5


def test_refit_is_not_kept_when_it_does_not_help(bundle: LoadedBundle) -> None:
    # cells like the training cells, so well separated that the bundle is already perfect on them
    x, y = synthetic_data(SyntheticSpec(seed=SPEC.seed, separation=SPEC.separation), 100)
    scaled = bundle.scale(x)
    assert (bundle.models["logistic_regression"].proba(scaled).argmax(axis=1) == y).mean() > 0.9
    profile = fit_profile(bundle, scaled, y, [f"P{i % 10}" for i in range(len(y))], site="same")
    for name, correction in profile.models.items():
        summary = profile.summary["models"][name]
        best = max(c["macro_f1"] for c in summary["candidates"].values())
        if best <= summary["baseline"]["macro_f1"]:
            assert correction.adapter == "none" and not correction.bias
            assert summary["chosen"] == "temperature"
    # and with a gain it cannot reach, nothing that changes labels is ever kept
    strict = fit_profile(
        bundle, *_site(bundle, 1.0)[:2], _site(bundle, 1.0)[2], site="s", settings=AdaptSettings(min_gain=1.0)
    )
    for correction in strict.models.values():
        assert correction.adapter == "none" and not correction.bias


def _sensitivity(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(axis=1)[y == M] == M).mean())


def test_myeloblast_sensitivity_is_never_lowered(bundle: LoadedBundle) -> None:
    # few myeloblasts among many other cells: a fitted class bias pulls the myeloblast logit down
    x, y = synthetic_data(SPEC, 400)
    keep = np.flatnonzero((y != M) | (np.arange(len(y)) < 60))
    scaled, y = bundle.scale(x[keep] + 0.5), y[keep]
    patients = [f"P{i % 20}" for i in range(len(y))]
    # min_gain -1 keeps the best class-bias correction whatever it does to macro-F1
    settings = AdaptSettings(adapters=("none",), min_gain=-1.0)
    profile = fit_profile(bundle, scaled, y, patients, site="imbalanced", settings=settings)
    boosted = []
    for name, model in bundle.models.items():
        before = _sensitivity(model.proba(scaled), y)
        after = _sensitivity(profile.proba(bundle, name, scaled)[1], y)
        assert after >= before
        summary = profile.summary["models"][name]
        assert summary["after"]["myeloblast_sensitivity"] >= summary["baseline"]["myeloblast_sensitivity"]
        boost = summary["myeloblast_boost"]
        if boost > 0:  # without the boost this correction would have lowered the sensitivity
            correction = profile.models[name]
            bias = np.array(correction.bias)
            bias[M] -= boost
            unguarded = type(correction)(correction.adapter, correction.temperature, tuple(bias))
            assert _sensitivity(unguarded.calibrate(model.proba(scaled)), y) < before
            boosted.append(name)
    assert boosted, "the data set no longer makes the bias lower myeloblast sensitivity"


def test_myeloblast_boost_is_the_smallest_sufficient_raise() -> None:
    logits = np.array([[2.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, -1.0, 0.5]])
    y = np.array([M, M, M])
    assert myeloblast_boost(logits, y, M, 1) == 0.0
    two = myeloblast_boost(logits, y, M, 2)
    assert 1.0 < two < 1.001
    raised = logits.copy()
    raised[:, M] += myeloblast_boost(logits, y, M, 3)
    assert (raised.argmax(axis=1) == M).all()


def test_names_and_too_few_patients_are_usage_errors(bundle: LoadedBundle) -> None:
    for bad in ("", "../x", "a/b", "x" * 65, ".hidden"):
        with pytest.raises(InvalidArgument):
            check_name(bad)
    assert check_name("lab-2026.v1") == "lab-2026.v1"
    scaled, y, _ = _site(bundle, 0.0, n=20)
    with pytest.raises(InvalidArgument, match="at least 2 patients"):
        fit_profile(bundle, scaled, y, ["P1"] * len(y), site="one")


def test_a_profile_never_withdraws_a_myeloblast_call_on_any_cells(bundle: LoadedBundle, shifted) -> None:  # type: ignore[no-untyped-def]
    profile = shifted[0]
    # cells unlike the site's (another shift, another seed): the corrections were not fitted on them
    x, _ = synthetic_data(SPEC, 300)
    other = bundle.scale(x + np.random.default_rng(9).normal(scale=0.8, size=x.shape) - 0.5)
    withdrawn_without_rule = 0
    for name, model in bundle.models.items():
        base_calls = model.proba(other).argmax(axis=1) == M
        after_calls = profile.proba(bundle, name, other)[1].argmax(axis=1) == M
        assert not (base_calls & ~after_calls).any()
        plain = profile.models[name].calibrate(model.proba(profile.adapt(name, other)))
        withdrawn_without_rule += int((base_calls & (plain.argmax(axis=1) != M)).sum())
    assert withdrawn_without_rule > 0, "these cells no longer exercise the rule"
