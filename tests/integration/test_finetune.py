"""Fine-tuning a blood-cell backbone end to end on a small three-laboratory set: the split network equals
the served one, features are cached, training is deterministic and touches only the back, the backbone is
served like any other (and only with its own preprocessing), and a bundle on it refuses a leaking split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hemascope.bundle import load_bundle
from hemascope.errors import ConfigurationError, FailedPrecondition
from hemascope.imaging.decode import decode_image
from hemascope.imaging.inputs import ImageInput
from hemascope.imaging.preprocess import get_preprocessing
from hemascope.training.finetune import features as features_module
from hemascope.training.finetune.features import VariantPlan, advance, front_features, prepare_variants
from hemascope.training.finetune.loop import FineTuneConfig, embed_cached, fine_tune
from hemascope.training.finetune.network import load_embedding, split_network
from hemascope.training.finetune.recipe import Recipe, read_metadata
from hemascope.training.finetune.run import BackboneTrainConfig, train_backbone
from hemascope.training.sources import load_spec
from hemascope.training.train import TrainConfig, train_classifiers
from services.feature.backbones import weights_file
from services.feature.core import FeatureCore
from services.feature.settings import FeatureSettings

pytestmark = pytest.mark.slow
OPTION = "cellcrop-hematoxylin"
TINY = FineTuneConfig(epochs=1, batch_size=8, seed=3)
TINY8 = FineTuneConfig(epochs=1, batch_size=8, seed=3, split=8)


@pytest.fixture(scope="module")
def imagenet() -> Path:
    return weights_file("efficientnet_lite0", None)


def test_front_then_back_is_the_served_embedding(real_images: list[Path], imagenet: Path) -> None:
    embedding = load_embedding(imagenet)
    front, back = split_network(embedding)
    option = get_preprocessing(OPTION)
    pixels = np.stack([option.prepare(decode_image(p.read_bytes()).pixels) for p in real_images[:4]])
    with torch.no_grad():
        whole = embedding(torch.from_numpy(pixels))
        split = back(front(torch.from_numpy(pixels)))
    assert torch.equal(whole, split)
    assert not any(p.requires_grad for p in front.parameters() if not any(p is q for q in back.parameters()))


def test_variants_start_with_the_served_input(real_images: list[Path]) -> None:
    data = real_images[6].read_bytes()
    variants = prepare_variants(data, VariantPlan(OPTION, copies=2))
    served = get_preprocessing(OPTION).prepare(decode_image(data).pixels)
    assert variants.shape == (3, 224, 224, 3) and np.array_equal(variants[0], served)
    assert not np.array_equal(variants[1], variants[0])
    assert np.array_equal(variants, prepare_variants(data, VariantPlan(OPTION, copies=2)))


def test_front_features_are_cached(
    real_images: list[Path], imagenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, _ = split_network(load_embedding(imagenet))
    plan = VariantPlan(OPTION, copies=1)
    first = front_features(real_images[:3], plan, front, "h", tmp_path, workers=0)
    assert first.shape == (3, 2, 80, 14, 14) and first.dtype == np.float16

    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("recomputed a cached chunk")

    monkeypatch.setattr(features_module, "_compute_chunk", fail)
    assert np.array_equal(front_features(real_images[:3], plan, front, "h", tmp_path, workers=0), first)
    with pytest.raises(AssertionError, match="recomputed"):  # another plan is another cache entry
        front_features(real_images[:3], VariantPlan(OPTION, copies=2), front, "h", tmp_path, workers=0)


def test_fine_tuning_is_deterministic_and_changes_only_the_back(
    real_images: list[Path], imagenet: Path, tmp_path: Path
) -> None:
    front, _ = split_network(load_embedding(imagenet))
    feats = front_features(real_images, VariantPlan(OPTION, copies=1), front, "h", tmp_path, workers=0)
    y = np.repeat(np.arange(5), 2).astype(np.int64)
    sites = ["a", "b"] * 5
    train = np.arange(10, dtype=np.int64)
    runs = [fine_tune(feats, y, sites, train, load_embedding(imagenet), 5, TINY8) for _ in range(2)]
    reference = load_embedding(imagenet).state_dict()
    a, b = (r.embedding.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = {
        k.split(".")[3]
        for k in a
        if k.startswith("trunk.net._blocks.") and not torch.equal(a[k], reference[k])
    }
    assert changed and min(int(i) for i in changed) >= 8  # blocks 8-15 only
    assert embed_cached(feats, runs[0].embedding, 8).shape == (10, 1280)
    later = advance(feats, load_embedding(imagenet), 8, 14)
    assert later.shape == (10, 2, 192, 7, 7)
    tuned = fine_tune(later, y, sites, train, load_embedding(imagenet), 5, TINY).embedding.state_dict()
    moved = {
        k.split(".")[3]
        for k in tuned
        if k.startswith("trunk.net._blocks.") and not torch.equal(tuned[k], reference[k])
    }
    assert moved == {"14", "15"}
    assert torch.equal(a["trunk.net._conv_stem.weight"], reference["trunk.net._conv_stem.weight"])
    assert runs[0].history[0]["epoch"] == 1 and np.isfinite(runs[0].history[0]["loss"])


@pytest.fixture(scope="module")
def backbone(three_labs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("backbones")
    config = BackboneTrainConfig(
        sources=load_spec(three_labs),
        out=root / "efficientnet_lite0_blood",
        recipe=Recipe(VariantPlan(OPTION, copies=1), TINY),
        cache_dir=root / "cache",
        workers=0,
        log=lambda _: None,
    )
    return config.out, train_backbone(config)


def test_train_backbone_writes_weights_metadata_card_and_loso(backbone: tuple[Path, dict[str, Any]]) -> None:
    folder, meta = backbone
    stored = read_metadata(folder)
    assert stored["weights_sha256"] == meta["weights_sha256"]
    assert len(stored["trained_on"]) == meta["split"]["fit"]
    assert set(meta["loso"]) == {"barcelona", "munich", "johns-hopkins"} == set(meta["loso_frozen"])
    munich = meta["loso"]["munich"]["models"]["logistic_regression"]
    assert munich["classes"] == ["myeloblast", "seg_neutrophil"]
    assert set(meta["loso"]["barcelona"]["models"]["logistic_regression"]["classes"]) >= {"seg_neutrophil"}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## Leave-one-source-out" in card and "(fine-tuned)" in card and "(frozen)" in card
    again = Recipe.from_json(stored["recipe"])
    assert json.loads(json.dumps(again.describe())) == stored["recipe"]
    assert again.key() == Recipe(VariantPlan(OPTION, copies=1), TINY).key()  # fold caches are found again


def test_the_fine_tuned_backbone_is_served_with_its_own_preprocessing_only(
    backbone: tuple[Path, dict[str, Any]],
    real_images: list[Path],
    model_cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, meta = backbone
    monkeypatch.setenv("HEMASCOPE_BACKBONE_DIR", str(folder.parent))
    settings = {"backbone": "efficientnet_lite0_blood", "model_cache_dir": model_cache_dir}
    core = FeatureCore(FeatureSettings(**settings))
    core.load()
    try:
        assert core.info.weights_hash == meta["weights_sha256"]
        assert core.info.preprocessing.name == OPTION
        served = core.embed(ImageInput(real_images[0].read_bytes())).vector
    finally:
        core.close()
    embedding = load_embedding(folder / "weights.pth")
    pixels = get_preprocessing(OPTION).prepare(decode_image(real_images[0].read_bytes()).pixels)
    with torch.no_grad():
        reference = embedding(torch.from_numpy(pixels[None])).numpy()[0]
    cosine = float(served @ reference / np.linalg.norm(served) / np.linalg.norm(reference))
    assert cosine > 0.9999  # the ONNX export of the fine-tuned weights
    with pytest.raises(ConfigurationError, match="fine-tuned on preprocessing 'cellcrop-hematoxylin'"):
        FeatureCore(FeatureSettings(**settings, preprocessing="plain")).load()


def test_classifiers_on_the_backbone_check_leakage_and_rerun_the_recipe_per_fold(
    backbone: tuple[Path, dict[str, Any]],
    three_labs: Path,
    model_cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, meta = backbone
    monkeypatch.setenv("HEMASCOPE_BACKBONE_DIR", str(folder.parent))
    monkeypatch.setenv("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache_dir))
    base = {
        "sources": load_spec(three_labs),
        "backbone": "efficientnet_lite0_blood",
        "models": ["logistic_regression"],
        "cv_folds": 0,
        "progress": False,
        "log": lambda _: None,
        "cache_dir": folder.parent / "cache",
    }
    results = train_classifiers(TrainConfig(out=tmp_path / "bundle", **base))
    check = results["split"]["backbone_leakage_check"]
    assert check["leakage"] == "none" and check["fit_images_seen_by_backbone"] == meta["split"]["fit"]
    assert results["embedding"]["preprocessing_option"] == OPTION
    assert load_bundle(tmp_path / "bundle").manifest.backbone == "efficientnet_lite0_blood"
    assert "fine-tuned per fold" in results["loso"]["embeddings"]
    lr = results["loso"]["folds"]["johns-hopkins"]["models"]["logistic_regression"]
    assert lr == meta["loso"]["johns-hopkins"]["models"]["logistic_regression"] | {"seconds": lr["seconds"]}
    with pytest.raises(FailedPrecondition, match="fine-tuned on images of this run's"):
        train_classifiers(TrainConfig(out=tmp_path / "leaky", seed=7, **base))
    per_site = results["models"]["logistic_regression"]["referral"]["test_per_site"]
    assert set(per_site) == {"barcelona", "munich", "johns-hopkins"}
