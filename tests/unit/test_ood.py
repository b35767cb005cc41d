"""The out-of-distribution model: fitting, thresholds, scores, and its safe storage in a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from hemascope.bundle import OOD_FILE, BundleError, OodModel, TrainedModel, load_bundle, save_bundle
from hemascope.datasets import CLASSES, MALIGNANT_CLASSES
from hemascope.training.ood import fit_ood, ood_threshold

RNG = np.random.default_rng(3)
MEANS = RNG.normal(scale=4.0, size=(5, 12))


def _sample(n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 5
    return MEANS[y] + RNG.normal(size=(n, 12)), y.astype(np.int64)


def test_threshold_flags_about_the_quantile_in_distribution_and_far_points_always() -> None:
    x_fit, y_fit = _sample(1000)
    x_cal, y_cal = _sample(1000)
    x_new, y_new = _sample(2000)
    ood = fit_ood(x_fit, y_fit, 5, components=12)
    threshold = ood_threshold(ood.score(x_cal, y_cal), 0.95)
    flagged = ood.score(x_new, y_new) > threshold
    assert 0.02 < flagged.mean() < 0.09
    far = x_new[:50] + 12.0 * np.sign(RNG.normal(size=(50, 12)))
    assert (ood.score(far, y_new[:50]) > threshold).all()
    assert np.all(ood.min_score(x_new) <= ood.score(x_new, y_new) + 1e-9)
    wrong = (y_new + 1) % 5  # distance to another class's cells is large
    assert np.median(ood.score(x_new, wrong)) > 2 * np.median(ood.score(x_new, y_new))


def test_fit_needs_every_class_and_threshold_a_proper_quantile() -> None:
    x, y = _sample(50)
    with pytest.raises(ValueError, match="missing"):
        fit_ood(x[y != 2], y[y != 2], 5)
    with pytest.raises(ValueError, match="quantile"):
        ood_threshold(np.ones(5), 1.0)


def _bundle(root: Path, with_ood: bool) -> Path:
    x, y = _sample(200)
    scaler = StandardScaler().fit(x)
    scaled = scaler.transform(x)
    model = TrainedModel(LogisticRegression(max_iter=500).fit(scaled, y), "sklearn", "v", ood_threshold=3.0)
    fields = {
        "bundle_version": "t",
        "backbone": "b",
        "weights_hash": "0" * 64,
        "dimension": 12,
        "preprocessing": "p",
        "classes": list(CLASSES),
        "malignant_classes": list(MALIGNANT_CLASSES),
    }
    ood = fit_ood(scaled, y, 5, components=6) if with_ood else None
    save_bundle(root, fields, scaler, {"logistic_regression": model}, ood)
    return root


def test_bundle_round_trip_hashes_and_checks_the_ood_file(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b", with_ood=True)
    bundle = load_bundle(root)
    assert bundle.manifest.ood_file == OOD_FILE and bundle.ood is not None
    assert bundle.models["logistic_regression"].entry.ood_threshold == 3.0
    x, y = _sample(10)
    scores = bundle.ood_scores(bundle.scale(x), y)
    assert scores is not None and scores.shape == (10,)
    data = bytearray((root / OOD_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"ood\.npz"):
        load_bundle(root)


def test_bundle_without_ood_loads_with_no_scores_and_zero_thresholds(tmp_path: Path) -> None:
    bundle = load_bundle(_bundle(tmp_path / "b", with_ood=False))
    assert bundle.ood is None and bundle.manifest.ood_file == ""
    assert bundle.models["logistic_regression"].entry.ood_threshold == 0.0
    assert bundle.ood_scores(np.zeros((2, 12)), np.zeros(2, np.int64)) is None


def test_load_refuses_pickles_and_wrong_shapes(tmp_path: Path) -> None:
    path = tmp_path / OOD_FILE
    good = OodModel(np.zeros(4), np.eye(2, 4), np.zeros((5, 2)), np.eye(2))
    good.save(path)
    assert OodModel.load(path, dimension=4, n_classes=5).components.shape == (2, 4)
    with pytest.raises(BundleError, match="has shape"):
        OodModel.load(path, dimension=8, n_classes=5)
    with path.open("wb") as handle:
        np.savez(handle, mean=np.array([object()]), components=good.components)
    with pytest.raises(BundleError, match="cannot load"):
        OodModel.load(path, dimension=4, n_classes=5)
