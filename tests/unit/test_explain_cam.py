"""The CAM layer on the committed bundle (efficientnet_lite0): gradients through a frozen backbone, head
parity, every model's method, refusals, and no hook or memory build-up over 1000 requests.

Imports torch; the backbone loads once per module (about a second).
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.bundle.manifest import softmax
from hemascope.data import REPO_ROOT
from hemascope.errors import FailedPrecondition, InvalidArgument, NotFound
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import preprocessing_for_version
from services.explain.cam import ABLATIONCAM, GRADCAM, GRADCAM_PLUS_PLUS, CamExplainer
from services.explain.heads import LogisticHead, is_differentiable
from services.explain.network import Head, SplitBackbone, split_backbone
from services.feature.backbones import weights_file

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: the 2-core test machine is shared, and tiny ops thrash with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle() -> LoadedBundle:
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def explainer(bundle: LoadedBundle, one_thread: None) -> CamExplainer:
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    return CamExplainer(backbone, bundle)


@pytest.fixture(scope="module")
def images(data_dir: Path, bundle: LoadedBundle) -> list[np.ndarray]:
    """One prepared val image per class (the bundle's preprocessing)."""
    option = preprocessing_for_version(bundle.manifest.preprocessing)
    out = []
    for name in bundle.manifest.classes:
        path = sorted((data_dir / "bloodcells-5class" / "val" / name).glob("*.jpg"))[0]
        out.append(option.prepare(decode_image(path.read_bytes()).pixels))
    return out


@pytest.fixture(scope="module")
def maps(explainer: CamExplainer, images: list[np.ndarray]) -> torch.Tensor:
    return explainer.maps(np.stack(images))


def _hooks(module: torch.nn.Module) -> int:
    count = 0
    for sub in module.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            count += len(getattr(sub, name))
    return count


def test_backbone_is_frozen_yet_gradcam_depends_on_the_class(
    explainer: CamExplainer, maps: torch.Tensor
) -> None:
    assert all(not p.requires_grad for p in explainer.backbone.parameters())
    one = maps[3:4]  # the myeloblast
    heat = {c: explainer.explain_maps(one, "logistic_regression", c).heatmap for c in range(5)}
    for value in heat.values():
        assert value.shape == (7, 7) and value.dtype == np.float32
        assert float(value.std()) > 0.05 and value.min() >= 0 and value.max() <= 1  # not constant
    # maps for different target classes differ (the gradient of each class's logit reaches the maps)
    differences = [float(np.abs(heat[a] - heat[b]).max()) for a in range(5) for b in range(a + 1, 5)]
    assert min(differences) > 0.05, differences


def test_gradients_reach_the_maps_through_the_head(explainer: CamExplainer, maps: torch.Tensor) -> None:
    head = explainer.backbone.head(explainer.classifier("logistic_regression", GRADCAM))
    leaf = maps[:1].detach().clone().requires_grad_(True)
    head(leaf)[0, 3].backward()
    assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0


def test_logistic_head_softmax_equals_the_bundle_probability(
    explainer: CamExplainer, bundle: LoadedBundle, maps: torch.Tensor
) -> None:
    head = explainer.backbone.head(LogisticHead(bundle, "logistic_regression"))
    with torch.no_grad():
        pooled = head.pooled(maps)
        logits = head(maps).double().numpy()
    expected = bundle.models["logistic_regression"].proba(bundle.scale(pooled.double().numpy()))
    np.testing.assert_allclose(softmax(logits), expected, atol=2e-5)
    assert (softmax(logits).argmax(axis=1) == np.arange(5)).sum() >= 4  # and it classifies the val images


def test_pooled_features_equal_the_feature_embedding(
    explainer: CamExplainer, images: list[np.ndarray]
) -> None:
    backbone: SplitBackbone = explainer.backbone
    pixels = torch.from_numpy(np.stack(images))
    with torch.no_grad():
        np.testing.assert_allclose(backbone(pixels).numpy(), backbone.embedding(pixels).numpy(), atol=1e-5)


@pytest.mark.parametrize("model", ["logistic_regression", "svm", "random_forest", "xgboost", "kmeans"])
def test_every_model_is_explained_with_its_method(
    explainer: CamExplainer, bundle: LoadedBundle, maps: torch.Tensor, model: str
) -> None:
    result = explainer.explain_maps(maps[3:4], model, None)
    assert result.method == (GRADCAM if model == "logistic_regression" else ABLATIONCAM)
    assert is_differentiable(bundle, model) == (model == "logistic_regression")
    assert result.class_index == result.predicted_index == int(np.argmax(result.probabilities))
    assert result.probabilities.shape == (5,) and abs(result.probabilities.sum() - 1) < 1e-6
    assert float(result.heatmap.std()) > 0.01 and np.isfinite(result.heatmap).all()


def test_gradcam_plus_plus_and_ablation_on_the_differentiable_model(
    explainer: CamExplainer, maps: torch.Tensor
) -> None:
    for method in (GRADCAM_PLUS_PLUS, ABLATIONCAM):
        result = explainer.explain_maps(maps[3:4], "logistic_regression", 3, method)
        assert result.method == method and float(result.heatmap.std()) > 0.01


@pytest.mark.parametrize("model", ["svm", "random_forest", "xgboost", "kmeans"])
def test_gradient_methods_on_non_differentiable_models_are_refused(
    explainer: CamExplainer, model: str
) -> None:
    for method in (GRADCAM, GRADCAM_PLUS_PLUS):
        with pytest.raises(FailedPrecondition) as info:
            explainer.check(model, method)
        assert info.value.reason == "NOT_DIFFERENTIABLE"


def test_unknown_model_method_and_class(explainer: CamExplainer, maps: torch.Tensor) -> None:
    with pytest.raises(NotFound):
        explainer.check("resnet_classifier", None)
    with pytest.raises(InvalidArgument):
        explainer.check("svm", "scorecam")
    with pytest.raises(InvalidArgument):
        explainer.explain_maps(maps[:1], "logistic_regression", 5)


def test_no_hooks_and_no_memory_growth_over_1000_gradcam_requests(images: list[np.ndarray]) -> None:
    """1000 Grad-CAM calls on precomputed maps leave no hook anywhere and no memory behind.

    Measured in a fresh process (see :func:`measure_1000_calls`), so earlier tests' allocations do not
    blur the numbers. A leak of what one call allocates (the maps' clone, the activations and gradients
    the library records: 1280 x 7 x 7 float32 = 245 KiB each) would grow the process by 245 MiB or more
    over 1000 calls; the bounds are 16 MiB of RSS over the 1000 calls, no more live tensors than before,
    no head of any call still alive, and no hook on any module. Measured here: +0.0 MiB RSS, -1 live tensors.
    """
    script = (
        "import json, sys, numpy as np; from tests.unit.test_explain_cam import measure_1000_calls; "
        "print(json.dumps(measure_1000_calls(np.load(sys.argv[1]))))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pixels = Path(tmp) / "prepared.npy"
        np.save(pixels, images[3])  # the myeloblast
        result = subprocess.run(
            [sys.executable, "-c", script, str(pixels)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"1000 Grad-CAM calls: {measured}")
    assert measured["calls"] == 1000 and measured["method"] == GRADCAM
    assert measured["hooks_after_calls"] == 0 and measured["hooks_on_shared_modules"] == 0
    assert measured["heads_alive"] == 0
    assert measured["live_tensors_delta"] <= 2
    assert measured["rss_growth_mib"] < 16, measured


def measure_1000_calls(prepared: np.ndarray) -> dict[str, Any]:
    """Runs 50 warm-up then 1000 Grad-CAM calls on one image's maps; returns what it measured.

    Large blocks are always mmap-ed (glibc's dynamic threshold would otherwise keep freed 245 KiB blocks
    on the heap, and RSS would show allocator state rather than live memory).
    """
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, 128 KiB
    torch.set_num_threads(1)
    bundle = load_bundle(BUNDLE)
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    explainer = CamExplainer(backbone, bundle)
    maps = explainer.maps(prepared[None])
    heads: weakref.WeakSet[Head] = weakref.WeakSet()
    latest: list[Head] = []
    make_head = backbone.head

    def recording(classifier: torch.nn.Module) -> Head:
        head = make_head(classifier)
        heads.add(head)
        latest[:] = [head]
        return head

    backbone.head = recording  # type: ignore[method-assign]
    for i in range(50):  # warm-up: allocator pools, lazy imports
        explainer.explain_maps(maps, "logistic_regression", i % 5)
    process = psutil.Process()
    gc.collect()
    rss_before, tensors_before = process.memory_info().rss, _live_tensors()
    hooks = 0
    method = ""
    for i in range(1000):
        method = explainer.explain_maps(maps, "logistic_regression", i % 5).method
        hooks += _hooks(latest[0])  # this call's head, after the call returned
    latest.clear()
    gc.collect()
    shared = _hooks(backbone) + sum(_hooks(head) for head in explainer._logistic.values())
    return {
        "calls": 1000,
        "method": method,
        "hooks_after_calls": hooks,
        "hooks_on_shared_modules": shared,
        "heads_alive": len(heads),
        "live_tensors_delta": _live_tensors() - tensors_before,
        "rss_growth_mib": round((process.memory_info().rss - rss_before) / 2**20, 2),
    }


def _live_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))
