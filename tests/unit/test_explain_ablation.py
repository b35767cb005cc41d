"""Ablation-CAM from the pooled features (services.explain.ablation, services.explain.rbf_svm) against the
grad-cam library's AblationCAM, on the committed bundle and real images from two laboratories.

Imports torch; the backbone loads once per module (about a second).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from sklearn.ensemble import RandomForestClassifier
from sklearn.svm import SVC

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.data import REPO_ROOT
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import preprocessing_for_version
from services.explain import rbf_svm
from services.explain.ablation import ablated_probabilities, active_channels
from services.explain.cam import ABLATIONCAM, GRADCAM, LIBRARY, POOLED, CamExplainer
from services.explain.network import split_backbone
from services.feature.backbones import weights_file

pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
NON_DIFFERENTIABLE = ("svm", "random_forest", "xgboost", "kmeans")


@pytest.fixture(scope="module")
def bundle() -> LoadedBundle:
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def explainers(bundle: LoadedBundle) -> Iterator[dict[str, CamExplainer]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core machine
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    yield {engine: CamExplainer(backbone, bundle, ablation_engine=engine) for engine in (POOLED, LIBRARY)}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def maps(data_dir: Path, bundle: LoadedBundle, explainers: dict[str, CamExplainer]) -> torch.Tensor:
    """Body maps of a Munich myeloblast, a Barcelona monocyte and a Johns Hopkins neutrophil."""
    option = preprocessing_for_version(bundle.manifest.preprocessing)
    paths = [
        sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0],
        sorted((data_dir / "bloodcells-5class" / "val" / "monocyte").glob("*.jpg"))[0],
        sorted((data_dir / "jhu-cellavision" / "seg_neutrophil").glob("*.jpg"))[0],
    ]
    prepared = np.stack([option.prepare(decode_image(p.read_bytes()).pixels) for p in paths])
    return explainers[POOLED].maps(prepared)


def _scaled_pooled(explainer: CamExplainer, bundle: LoadedBundle, maps: torch.Tensor) -> NDArray[np.float64]:
    with torch.no_grad():
        pooled = explainer.backbone.head(torch.nn.Identity()).pooled(maps)
    return bundle.scale(pooled.numpy().astype(np.float64))


@pytest.mark.parametrize("model", [*NON_DIFFERENTIABLE, "logistic_regression"])
def test_pooled_engine_equals_the_librarys_ablation_cam(
    explainers: dict[str, CamExplainer], maps: torch.Tensor, model: str
) -> None:
    for row in range(maps.shape[0]):
        one = maps[row : row + 1]
        for target in (None, 2):  # the predicted class and the monocyte class
            fast = explainers[POOLED].explain_maps(one, model, target, ABLATIONCAM)
            reference = explainers[LIBRARY].explain_maps(one, model, target, ABLATIONCAM)
            assert fast.method == reference.method == ABLATIONCAM
            assert fast.class_index == reference.class_index
            np.testing.assert_allclose(fast.probabilities, reference.probabilities, rtol=0, atol=1e-12)
            assert fast.heatmap.shape == reference.heatmap.shape == (7, 7)
            assert fast.heatmap.dtype == np.float32
            # float32 sums in another order: measured at most 3e-5 on real images
            np.testing.assert_allclose(fast.heatmap, reference.heatmap, atol=2e-4)
            if target is None:  # the predicted class's map is a real one (another class's may be all 0)
                assert float(reference.heatmap.std()) > 0.01


def test_svm_one_feature_probabilities_equal_libsvm(
    explainers: dict[str, CamExplainer], bundle: LoadedBundle, maps: torch.Tensor
) -> None:
    svc = bundle.models["svm"].estimator
    assert rbf_svm.supported(svc)
    scaled = _scaled_pooled(explainers[POOLED], bundle, maps)
    rng = np.random.default_rng(0)
    for point in scaled:
        features = rng.permutation(point.size)[:300].astype(np.int64)
        values = rng.normal(0.0, 2.0, size=features.size)  # any replacement, not only the ablation's
        copies = np.repeat(point[None, :], features.size, axis=0)
        copies[np.arange(features.size), features] = values
        got = rbf_svm.one_feature_proba(svc, point, features, values)
        np.testing.assert_allclose(got, svc.predict_proba(copies), atol=1e-12)


@pytest.mark.parametrize("classes", [2, 3])
def test_svm_one_feature_probabilities_for_other_class_counts(
    explainers: dict[str, CamExplainer], bundle: LoadedBundle, maps: torch.Tensor, classes: int
) -> None:
    """Binary (no pairwise coupling) and three-class SVMs fitted here on real pooled features."""
    scaled = _scaled_pooled(explainers[POOLED], bundle, maps)
    rng = np.random.default_rng(classes)
    x = np.concatenate([scaled + rng.normal(0, 0.5, size=scaled.shape) for _ in range(20)])
    y = np.tile(np.arange(scaled.shape[0]) % classes, 20)
    svc = SVC(kernel="rbf", probability=True, random_state=0).fit(x, y)
    features = np.arange(0, scaled.shape[1], 7, dtype=np.int64)
    values = np.zeros(features.size)
    copies = np.repeat(scaled[:1], features.size, axis=0)
    copies[np.arange(features.size), features] = values
    got = rbf_svm.one_feature_proba(svc, scaled[0], features, values)
    np.testing.assert_allclose(got, svc.predict_proba(copies), atol=1e-12)


def test_only_rbf_svms_with_probabilities_take_the_kernel_update_path(bundle: LoadedBundle) -> None:
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    assert rbf_svm.supported(SVC(kernel="rbf", probability=True, random_state=0).fit(x, y))
    assert not rbf_svm.supported(SVC(kernel="linear", probability=True, random_state=0).fit(x, y))
    assert not rbf_svm.supported(SVC(kernel="rbf", probability=False).fit(x, y))
    assert not rbf_svm.supported(SVC(kernel="rbf", probability=True))  # not fitted
    assert not rbf_svm.supported(RandomForestClassifier(n_estimators=2).fit(x, y))
    assert not rbf_svm.supported(bundle.models["xgboost"].estimator)


@pytest.mark.parametrize("model", [*NON_DIFFERENTIABLE, "logistic_regression"])
def test_ablated_probabilities_equal_the_models_own(
    explainers: dict[str, CamExplainer], bundle: LoadedBundle, maps: torch.Tensor, model: str
) -> None:
    scaled = _scaled_pooled(explainers[POOLED], bundle, maps)[0]
    zero = bundle.scale(np.zeros((1, scaled.size)))[0]
    features = np.arange(0, scaled.size, 3, dtype=np.int64)
    copies = np.repeat(scaled[None, :], features.size, axis=0)
    copies[np.arange(features.size), features] = zero[features]
    got = ablated_probabilities(bundle, model, scaled, features, zero[features])
    np.testing.assert_allclose(got, bundle.models[model].proba(copies), atol=1e-9)


def test_only_channels_with_activation_are_ablated(
    explainers: dict[str, CamExplainer], maps: torch.Tensor
) -> None:
    head = explainers[POOLED].backbone.head(torch.nn.Identity())
    with torch.no_grad():
        activation = head.target_layer(maps).numpy()
    for channel_maps in activation:
        active = active_channels(channel_maps)
        silent = np.setdiff1d(np.arange(channel_maps.shape[0]), active)
        assert np.all(channel_maps[silent] == 0)  # nothing to ablate there
        assert np.all(np.abs(channel_maps[active]).reshape(active.size, -1).max(axis=1) > 0)
        assert 0 < active.size < channel_maps.shape[0]  # ReLU6 leaves a part of the 1280 channels silent


def test_engines_name_their_cache_entries_apart(explainers: dict[str, CamExplainer]) -> None:
    pooled, library = explainers[POOLED], explainers[LIBRARY]
    assert pooled.revision(ABLATIONCAM) != library.revision(ABLATIONCAM)
    assert library.revision(ABLATIONCAM) == ABLATIONCAM  # the name its entries were cached under
    assert pooled.revision(GRADCAM) == library.revision(GRADCAM) == GRADCAM  # Grad-CAM is unchanged


def test_an_unknown_engine_is_refused(explainers: dict[str, CamExplainer], bundle: LoadedBundle) -> None:
    with pytest.raises(ValueError, match="unknown Ablation-CAM engine"):
        CamExplainer(explainers[POOLED].backbone, bundle, ablation_engine="fast")
