"""The bundle's acquisition reference: fitting, thresholds, storage, and what it says of real laboratories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hemascope.bundle.manifest import BundleError
from hemascope.bundle.site import SiteReference
from hemascope.imaging.fingerprint import SIZE
from hemascope.training.fingerprints import fingerprint_files
from hemascope.training.site_reference import fit_site_reference


def _gaussian(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return rng.normal(100.0 + shift, 3.0, size=(n, SIZE))


@pytest.fixture
def reference() -> SiteReference:
    rng = np.random.default_rng(0)
    fit = np.r_[_gaussian(rng, 300, 0), _gaussian(rng, 300, 30)]
    calib = np.r_[_gaussian(rng, 200, 0), _gaussian(rng, 200, 30)]
    y = np.r_[np.zeros(300), np.ones(300)].astype(int)
    cy = np.r_[np.zeros(200), np.ones(200)].astype(int)
    return fit_site_reference(fit, y, calib, cy, 2, quantile=0.9)


def test_thresholds_flag_the_chosen_share_and_other_acquisitions(reference: SiteReference) -> None:
    rng = np.random.default_rng(1)
    same = _gaussian(rng, 1000, 0)
    flagged = reference.atypical(reference.score(same, np.zeros(1000, int)), np.zeros(1000, int))
    assert 0.05 < flagged.mean() < 0.16
    assert reference.expected_atypical_rate == pytest.approx(0.1)
    # class 0 answered on images that look like class 1's acquisition: atypical for class 0
    other = _gaussian(rng, 200, 30)
    assert reference.atypical(reference.score(other, np.zeros(200, int)), np.zeros(200, int)).mean() > 0.95
    assert reference.atypical(reference.score(other, np.ones(200, int)), np.ones(200, int)).mean() < 0.2


def test_round_trip_and_refusals(reference: SiteReference, tmp_path: Path) -> None:
    path = tmp_path / "site.npz"
    reference.save(path)
    loaded = SiteReference.load(path, n_classes=2)
    np.testing.assert_array_equal(loaded.precisions, reference.precisions)
    with pytest.raises(BundleError, match="class_means has shape"):
        SiteReference.load(path, n_classes=3)
    names = ("used", "class_means", "precisions", "thresholds")
    arrays = {k: getattr(reference, k) for k in names}
    np.savez(path, **arrays, quantile=reference.quantile, revision=np.asarray(99.0))
    with pytest.raises(BundleError, match="revision 99"):
        SiteReference.load(path, n_classes=2)
    arrays["thresholds"] = np.array([np.nan, 1.0])
    np.savez(path, **arrays, quantile=reference.quantile, revision=reference.revision)
    with pytest.raises(BundleError, match="non-finite"):
        SiteReference.load(path, n_classes=2)
    path.write_bytes(b"not an npz")
    with pytest.raises(BundleError, match="cannot load"):
        SiteReference.load(path, n_classes=2)


def test_a_class_without_fit_images_gets_the_pooled_reference_and_bad_shapes_are_refused() -> None:
    rng = np.random.default_rng(2)
    fit, calib = _gaussian(rng, 50, 0), _gaussian(rng, 20, 0)
    ref = fit_site_reference(fit, np.zeros(50, int), calib, np.zeros(20, int), 2)
    np.testing.assert_allclose(ref.class_means[1], ref.class_means[0], atol=0.5)
    with pytest.raises(ValueError, match="at least two fit images"):
        fit_site_reference(fit[:1], np.zeros(1, int), calib, np.zeros(20, int), 2)
    with pytest.raises(ValueError, match="N x"):
        fit_site_reference(np.zeros((10, 3)), np.zeros(10, int), np.zeros((5, 3)), np.zeros(5, int), 1)


def test_a_class_seen_through_one_scanner_is_atypical_through_another(data_dir: Path) -> None:
    """Myeloblasts were only ever imaged in Munich here; Johns Hopkins myeloblasts (CellaVision) answered
    as myeloblasts are atypical, while unseen Munich myeloblasts are not."""
    five = data_dir / "bloodcells-5class"
    classes = ["monocyte", "myeloblast"]
    fit_paths, fit_y, calib_paths, calib_y, unseen = [], [], [], [], []
    for c, name in enumerate(classes):
        paths = sorted((five / "train" / name).glob("*.jpg"))
        fit_paths += paths[:40]
        fit_y += [c] * 40
        calib_paths += paths[40:70]
        calib_y += [c] * 30
        if name == "myeloblast":
            unseen = sorted((five / "val" / name).glob("*.jpg"))[:20]
    jhu = sorted((data_dir / "jhu-cellavision" / "myeloblast").glob("*.jpg"))[::15][:20]
    fps = fingerprint_files([*fit_paths, *calib_paths, *unseen, *jhu])
    n_fit, n_calib = len(fit_paths), len(calib_paths)
    ref = fit_site_reference(fps[:n_fit], np.array(fit_y), fps[n_fit : n_fit + n_calib], np.array(calib_y), 2)
    blast = np.ones(20, int)
    munich = ref.atypical(ref.score(fps[n_fit + n_calib : n_fit + n_calib + 20], blast), blast)
    hopkins = ref.atypical(ref.score(fps[-20:], blast), blast)
    assert munich.mean() <= 0.25
    assert hopkins.mean() >= 0.8
