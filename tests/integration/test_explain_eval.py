"""The explanation evaluation's pieces on real images: random baselines, faithfulness of the LR Grad-CAM,
ROAD against the library's ROADCombined, and the randomisation sanity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from hemascope.bundle import LoadedBundle, load_bundle
from hemascope.data import REPO_ROOT
from hemascope.datasets import CLASSES
from services.explain.cam import LIBRARY, POOLED, CamExplainer
from services.explain.evaluation import data, faithfulness, sanity
from services.explain.evaluation.maps import cached_maps, full_resolution, random_maps
from services.explain.heads import LogisticHead
from services.explain.network import SplitBackbone, split_backbone
from services.feature.backbones import weights_file

pytestmark = pytest.mark.slow
LR = "logistic_regression"


@pytest.fixture(scope="module")
def setup(data_dir: Path) -> tuple[SplitBackbone, LoadedBundle, NDArray[np.uint8]]:
    bundle = load_bundle(REPO_ROOT / "models" / "bloodcells-5class")
    backbone = split_backbone(bundle.manifest.backbone, weights_file(bundle.manifest.backbone, None))
    paths = [sorted((data_dir / "bloodcells-5class" / "val" / c).glob("*.jpg"))[0] for c in CLASSES]
    images = [
        data.EvalImage(p, i, data.SCANNER_OF[c], "test")
        for i, (p, c) in enumerate(zip(paths, CLASSES, strict=True))
    ]
    return backbone, bundle, data.prepare(images, data.bundle_preprocessing(bundle))


def test_lr_gradcam_beats_random_maps_whose_seeds_agree_within_noise(
    setup: tuple[SplitBackbone, LoadedBundle, NDArray[np.uint8]],
) -> None:
    backbone, bundle, prepared = setup
    explainer, scorer = CamExplainer(backbone, bundle), faithfulness.Scorer(backbone, bundle)
    column = list(bundle.models).index(LR)
    scores = []
    for i, pixels in enumerate(prepared):
        result = explainer.explain(pixels, LR)
        maps = [full_resolution(result.heatmap, 224)]
        maps += [full_resolution(h, 224) for h in random_maps(2, result.heatmap.shape, seed=100 + i)]
        curves = faithfulness.deletion_insertion(
            scorer, pixels, maps, np.full(len(bundle.models), result.class_index)
        )
        scores.append((curves.auc("insertion") - curves.auc("deletion"))[:, column])
    cam, first, second = np.asarray(scores).mean(axis=0)  # insertion - deletion: higher is better
    assert abs(first - second) < 0.15  # two random seeds: the same score within noise
    assert cam > max(first, second) + 0.15  # measured: 0.37 against 0.05 and -0.03


def test_road_equals_the_librarys_road_combined(
    setup: tuple[SplitBackbone, LoadedBundle, NDArray[np.uint8]],
) -> None:
    backbone, bundle, prepared = setup
    pixels = prepared[2]
    result = CamExplainer(backbone, bundle).explain(pixels, LR)
    full = full_resolution(result.heatmap, 224)
    targets = np.full(len(bundle.models), result.class_index)
    ours = faithfulness.road_scores(faithfulness.Scorer(backbone, bundle), pixels, [full], targets, [50])
    head = backbone.head(LogisticHead(bundle, LR))
    model = torch.nn.Sequential(_Maps(backbone), head)  # normalised input -> calibrated logits
    normalised = backbone.normalise(torch.from_numpy(pixels[None].copy()))
    theirs = ROADCombined(percentiles=[50])(
        normalised, full[None], [ClassifierOutputSoftmaxTarget(result.class_index)], model
    )
    # the same perturbations and score; only the imputation noise (0.01) is drawn differently
    assert ours[0, list(bundle.models).index(LR)] == pytest.approx(float(theirs[0]), abs=0.03)


class _Maps(torch.nn.Module):
    def __init__(self, backbone: SplitBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.maps(x)


def test_randomising_the_weights_changes_the_maps(
    setup: tuple[SplitBackbone, LoadedBundle, NDArray[np.uint8]],
) -> None:
    backbone, bundle, prepared = setup
    explainer = CamExplainer(backbone, bundle)
    results = [explainer.explain(p, LR) for p in prepared]
    originals = np.stack([r.heatmap for r in results])
    classes = np.asarray([r.class_index for r in results], np.int64)
    again = np.stack([explainer.explain(p, LR).heatmap for p in prepared])
    assert np.mean([sanity.spearman(a, b) for a, b in zip(originals, again, strict=True)]) > 0.999
    rows = sanity.cascade(
        backbone, bundle, LR, prepared, originals, classes, "gradcam", stages=sanity.STAGES[:2]
    )
    assert [r.stage for r in rows] == ["classifier head", "+ head conv"]
    for row in rows:
        assert row.images == len(prepared)
        assert row.spearman_mean < 0.6  # measured on 10 held-out images: 0.08 and 0.19


def test_the_held_out_part_of_a_bundle_from_three_laboratories_is_reproduced(
    data_dir: Path, tmp_path: Path
) -> None:
    """The committed bundle was trained on bloodcells-5class and jhu-cellavision: its test part (1047
    images in the manifest) is reproduced from the sources it records, every laboratory in it."""
    bundle = load_bundle(REPO_ROOT / "models" / "bloodcells-5class")
    held_out = data.held_out_paths(data_dir / "bloodcells-5class", bundle, tmp_path)
    assert len(held_out) == bundle.manifest.training["split"]["test"] == 1047
    assert {site for _, _, site in held_out} == {"barcelona", "munich", "johns-hopkins"}
    assert all(path.is_file() and path.parent.name == label for path, label, _ in held_out)
    assert data.held_out_paths(data_dir / "bloodcells-5class", bundle, tmp_path) == held_out  # cached


def test_maps_are_cached_per_ablation_engine(
    setup: tuple[SplitBackbone, LoadedBundle, NDArray[np.uint8]], tmp_path: Path
) -> None:
    backbone, bundle, prepared = setup
    images = [data.EvalImage(Path(f"/images/{c}.jpg"), i, "barcelona", "test") for i, c in enumerate(CLASSES)]
    first, second = images[3:4], prepared[3:4]  # the myeloblast
    pooled = cached_maps(CamExplainer(backbone, bundle, ablation_engine=POOLED), first, second, tmp_path)
    library = cached_maps(CamExplainer(backbone, bundle, ablation_engine=LIBRARY), first, second, tmp_path)
    assert len(list(tmp_path.rglob("*.npz"))) == 2  # one file per engine: the library's was computed
    assert np.isfinite(library[0].seconds).all() and np.isfinite(pooled[0].seconds).all()
    np.testing.assert_allclose(pooled[0].heatmaps, library[0].heatmaps, atol=2e-4)
    again = cached_maps(CamExplainer(backbone, bundle, ablation_engine=POOLED), first, second, tmp_path)
    assert np.isnan(again[0].seconds).all()  # read back, not computed
    np.testing.assert_array_equal(again[0].heatmaps, pooled[0].heatmaps)
