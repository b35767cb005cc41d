"""ExplainCore without gRPC, on the committed bundle and real images: explanations, overlay size, cache,
embeddings (consistent with the classifier), errors, limits and the concurrency bound."""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hemascope.bundle import BundleError
from hemascope.data import REPO_ROOT
from hemascope.errors import (
    ConfigurationError,
    FailedPrecondition,
    InvalidArgument,
    InvalidImage,
    NotFound,
    ResourceExhausted,
)
from hemascope.imaging.decode import REASON_TOO_LARGE, REASON_TOO_MANY_PIXELS, ImageLimits, decode_image
from hemascope.imaging.inputs import ImageInput
from services.classifier.core import ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.explain.admission import Admission
from services.explain.cache import build_explain_cache
from services.explain.core import ExplainCore
from services.explain.settings import ExplainSettings
from tests.conftest import encode

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"


@pytest.fixture(scope="module")
def core() -> Iterator[ExplainCore]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core machine: tiny ops thrash with more
    core = ExplainCore(ExplainSettings(bundle=BUNDLE, metrics_port=None, log_json=False))
    core.load()
    yield core
    core.close()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paths(data_dir: Path) -> dict[str, Path]:
    """The first val image of each class (PBC ones are 360 x 363, Munich ones 400 x 400)."""
    root = data_dir / "bloodcells-5class" / "val"
    return {d.name: sorted(d.glob("*.jpg"))[0] for d in sorted(root.iterdir())}


def image(path: Path) -> ImageInput:
    return ImageInput(data=path.read_bytes())


def embedding_of(core: ExplainCore, path: Path, **provenance: str) -> EmbeddingInput:
    """The image's embedding as the feature service makes it (the split backbone's pooled features)."""
    loaded = core.loaded
    prepared = loaded.preprocessing.prepare(decode_image(path.read_bytes()).pixels)
    with torch.no_grad():
        vector = loaded.explainer.backbone(torch.from_numpy(np.array(prepared[None])))[0].numpy()
    manifest = loaded.bundle.manifest
    fields = {
        "backbone": manifest.backbone,
        "weights_hash": manifest.weights_hash,
        "preprocessing": manifest.preprocessing,
    }
    return EmbeddingInput(values=vector.astype(np.float32), dimension=len(vector), **(fields | provenance))


def test_explains_the_predicted_class_with_an_overlay_at_the_original_size(
    core: ExplainCore, paths: dict[str, Path]
) -> None:
    path = paths["monocyte"]
    result = core.explain(image(path), "logistic_regression", skip_cache=True)
    assert result.method == "gradcam" and result.class_name == result.predicted_class == "monocyte"
    assert result.class_probability == result.predicted_probability > 0.5
    assert result.heatmap.shape == (7, 7) and result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    original = Image.open(path)
    overlay = Image.open(io.BytesIO(result.overlay_png))
    assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == original.size == (360, 363)
    assert (result.width, result.height) == original.size
    # the map lies where the bundle's preprocessing took its input from: the cell crop, or the whole frame
    box = core.loaded.preprocessing.prepare_report(np.asarray(original.convert("RGB"))).box
    expected = (0, 0, 360, 363) if box is None else tuple(round(v) for v in box)
    assert result.region == expected
    assert result.bundle_version == core.loaded.bundle.manifest.bundle_version
    assert result.model_version == "logistic_regression-1" and not result.from_embedding
    # the focus overlay leaves the image as it is where the heat is low, and colours it where it is high
    blended = np.asarray(overlay, dtype=np.int16)
    changed = np.abs(blended - np.asarray(original.convert("RGB"), dtype=np.int16)).max(axis=2) > 3
    assert 0.01 < changed.mean() < 0.6
    assert not changed[:10, :10].any()  # a corner (background) keeps its stain colours
    assert result.overlay == "focus"


def test_the_studys_overlay_is_an_option_and_an_unknown_style_is_refused(
    core: ExplainCore, paths: dict[str, Path]
) -> None:
    path = paths["monocyte"]
    study = core.explain(image(path), "logistic_regression", overlay="jet40")
    assert study.overlay == "jet40"
    original = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    tinted = np.asarray(Image.open(io.BytesIO(study.overlay_png)), dtype=np.int16)
    assert (np.abs(tinted - original).max(axis=2) > 3).mean() > 0.9  # JET at 40% over everything
    with pytest.raises(InvalidArgument, match="unknown overlay style 'sepia'; known: focus, jet40"):
        core.explain(image(path), "logistic_regression", overlay="sepia")


def test_second_identical_call_is_a_cache_hit(core: ExplainCore, paths: dict[str, Path]) -> None:
    path = paths["basophil"]
    first = core.explain(image(path), "xgboost", "basophil")
    second = core.explain(image(path), "xgboost", "basophil")
    assert not first.cache_hit and second.cache_hit
    assert second.timings.cam_ms == 0 and first.timings.cam_ms > 0
    assert np.array_equal(first.heatmap, second.heatmap) and first.overlay_png == second.overlay_png
    assert first.class_probability == second.class_probability and second.method == "ablationcam"
    other_class = core.explain(image(path), "xgboost", "monocyte")
    assert not other_class.cache_hit and not np.array_equal(other_class.heatmap, first.heatmap)
    assert not core.explain(image(path), "xgboost", "basophil", skip_cache=True).cache_hit


def test_class_maps_differ_and_every_model_gets_its_method(core: ExplainCore, paths: dict[str, Path]) -> None:
    path = paths["myeloblast"]
    methods = {m.name: m.default_method for m in core.models()}
    assert methods == {
        "kmeans": "ablationcam",
        "logistic_regression": "gradcam",
        "random_forest": "ablationcam",
        "svm": "ablationcam",
        "xgboost": "ablationcam",
    }
    for model, method in methods.items():
        result = core.explain(image(path), model)
        assert result.method == method and float(result.heatmap.std()) > 0.01, model
    a = core.explain(image(path), "logistic_regression", "myeloblast").heatmap
    b = core.explain(image(path), "logistic_regression", "seg_neutrophil").heatmap
    assert float(np.abs(a - b).max()) > 0.05


def test_embedding_probabilities_are_the_classifier_services(
    core: ExplainCore, paths: dict[str, Path]
) -> None:
    classifier = ClassifierCore(ClassifierSettings(bundle=BUNDLE))
    classifier.load()
    for model in ("logistic_regression", "svm"):
        own = embedding_of(core, paths["erythroblast"])
        result = core.explain(image(paths["erythroblast"]), model, embedding=own)
        expected = classifier.classify([own], [model]).outputs[0]
        classes = core.loaded.classes
        assert result.from_embedding and result.predicted_class == classes[int(expected.labels[0])]
        assert result.predicted_probability == pytest.approx(float(expected.confidence[0]), abs=1e-12)
    # another image's embedding decides the predicted (and so the explained) class
    other = embedding_of(core, paths["myeloblast"])
    result = core.explain(image(paths["erythroblast"]), "logistic_regression", embedding=other)
    assert result.predicted_class == result.class_name == "myeloblast"


@pytest.mark.parametrize(
    ("provenance", "reason"),
    [
        ({"backbone": "resnet50"}, "WRONG_BACKBONE"),
        ({"weights_hash": "0" * 64}, "WRONG_WEIGHTS"),
        ({"preprocessing": "cellcrop-224-bilinear-aa-imagenet.seg1.v1"}, "WRONG_PREPROCESSING"),
    ],
)
def test_embedding_with_other_provenance_is_refused(
    core: ExplainCore, paths: dict[str, Path], provenance: dict[str, str], reason: str
) -> None:
    bad = embedding_of(core, paths["basophil"], **provenance)
    with pytest.raises(FailedPrecondition) as info:
        core.explain(image(paths["basophil"]), "svm", embedding=bad)
    assert info.value.reason == reason and info.value.field.startswith("embedding.")


def test_embedding_of_the_wrong_dimension_is_refused(core: ExplainCore, paths: dict[str, Path]) -> None:
    short = EmbeddingInput(values=np.zeros(2048, np.float32))
    with pytest.raises(FailedPrecondition):
        core.explain(image(paths["basophil"]), "svm", embedding=short)


def test_unknown_names_and_non_differentiable_models(core: ExplainCore, paths: dict[str, Path]) -> None:
    data = image(paths["basophil"])
    with pytest.raises(NotFound):
        core.explain(data, "no_such_model")
    with pytest.raises(InvalidArgument) as info:
        core.explain(data, "svm", "lymphocyte")
    assert info.value.reason == "UNKNOWN_CLASS" and info.value.field == "target_class"
    with pytest.raises(InvalidArgument):
        core.explain(data, "svm", method="scorecam")
    with pytest.raises(FailedPrecondition) as refused:
        core.explain(data, "svm", method="gradcam")
    assert refused.value.reason == "NOT_DIFFERENTIABLE"


def test_corrupt_and_truncated_images_are_invalid_and_the_core_keeps_working(
    core: ExplainCore, paths: dict[str, Path]
) -> None:
    data = paths["monocyte"].read_bytes()
    for bad in (b"not an image at all", data[: len(data) // 2], b""):
        with pytest.raises(InvalidImage):
            core.explain(ImageInput(data=bad), "logistic_regression")
    assert core.explain(ImageInput(data=data), "logistic_regression").class_name == "monocyte"


def test_oversized_images_are_refused(
    core: ExplainCore, paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = paths["monocyte"].read_bytes()
    monkeypatch.setattr(core, "limits", ImageLimits(max_bytes=len(data) - 1))
    with pytest.raises(InvalidImage) as info:
        core.explain(ImageInput(data=data), "logistic_regression")
    assert info.value.reason == REASON_TOO_LARGE
    monkeypatch.setattr(core, "limits", ImageLimits(max_pixels=360 * 363 - 1))
    with pytest.raises(InvalidImage) as info:
        core.explain(ImageInput(data=data), "logistic_regression")
    assert info.value.reason == REASON_TOO_MANY_PIXELS


def test_full_slots_give_resource_exhausted_but_cache_hits_still_answer(
    core: ExplainCore, paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = paths["seg_neutrophil"]
    cached = core.explain(image(path), "logistic_regression", "seg_neutrophil")
    admission = Admission(max_concurrent=1, max_queue=0)
    monkeypatch.setattr(core, "admission", admission)
    with admission.slot():  # another explanation is running; none may wait
        with pytest.raises(ResourceExhausted):
            core.explain(image(path), "logistic_regression", "basophil")
        hit = core.explain(image(path), "logistic_regression", "seg_neutrophil")
        assert hit.cache_hit and np.array_equal(hit.heatmap, cached.heatmap)
    assert not core.explain(image(path), "logistic_regression", "basophil").cache_hit


def test_a_png_of_the_same_pixels_shares_the_cache_entry(core: ExplainCore, paths: dict[str, Path]) -> None:
    pixels = decode_image(paths["erythroblast"].read_bytes()).pixels
    first = core.explain(ImageInput(data=encode(pixels, "PNG")), "random_forest", "erythroblast")
    second = core.explain(ImageInput(data=encode(pixels, "BMP")), "random_forest", "erythroblast")
    assert second.cache_hit and first.content_hash == second.content_hash


def test_load_refuses_weights_other_than_the_bundles(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    expected = manifest["weights_hash"]
    manifest["weights_hash"] = "f" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError) as info:
        ExplainCore(ExplainSettings(bundle=bundle, metrics_port=None)).load()
    assert expected in info.value.message and "f" * 64 in info.value.message
    with pytest.raises(BundleError):
        ExplainCore(ExplainSettings(bundle=None, metrics_port=None)).load()


def large_smear(width: int, height: int) -> bytes:
    """A large image that compresses well (a gradient with a darker disc), as a PNG."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[..., 0] = (xs * 255 // width).astype(np.uint8)
    pixels[..., 1] = 200
    pixels[..., 2] = (ys * 255 // height).astype(np.uint8)
    disc = (xs - width // 2) ** 2 + (ys - height // 2) ** 2 < (min(width, height) // 6) ** 2
    pixels[disc] = (120, 60, 160)
    return encode(pixels, "PNG")


@pytest.mark.parametrize("style", ["focus", "jet40"])
def test_a_large_image_is_explained_in_bounded_memory(
    core: ExplainCore, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    width, height = 4000, 3000
    data = large_smear(width, height)
    monkeypatch.setattr(core.settings, "max_overlay_pixels", 300_000)
    tracemalloc.start()
    try:
        result = core.explain(ImageInput(data=data), "logistic_regression", skip_cache=True, overlay=style)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    decoded_bytes = width * height * 3
    # The full-size image is decoded once; everything after works on the scaled copy. Working at full
    # size, the overlay alone needs several float32 arrays of the image (over 10 x its bytes).
    assert peak < 3 * decoded_bytes
    overlay = Image.open(io.BytesIO(result.overlay_png))
    assert overlay.width * overlay.height <= 300_000
    assert (overlay.width, overlay.height) == (result.overlay_width, result.overlay_height)
    assert abs(overlay.width / overlay.height - width / height) < 0.01
    assert (result.width, result.height) == (width, height)  # the original's size and frame
    x0, y0, x1, y1 = result.region
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_large_image_decodes_are_bounded_like_explanations(
    core: ExplainCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = large_smear(800, 600)
    monkeypatch.setattr(core.settings, "max_overlay_pixels", 100_000)
    gate = Admission(max_concurrent=1, max_queue=0, what="large image decodes", metrics=False)
    monkeypatch.setattr(core, "large_images", gate)
    small = encode(np.full((64, 64, 3), 180, np.uint8), "PNG")
    with gate.slot():  # another large image is being decoded; none may wait
        with pytest.raises(ResourceExhausted, match="large image decodes"):
            core.explain(ImageInput(data=data), "logistic_regression", skip_cache=True)
        core.explain(ImageInput(data=small), "logistic_regression", skip_cache=True)  # small ones pass


def test_ablation_engines_never_serve_each_others_cached_maps(paths: dict[str, Path]) -> None:
    """Two cores on one cache: a map the library engine cached is not served as the pooled engine's (each
    computes and caches its own, and they agree), while Grad-CAM entries, unchanged, are shared."""
    shared = build_explain_cache(None, prefix="", ttl_s=600, memory_entries=64, redis_timeout_s=1.0)
    cores = {}
    for engine in ("library", "pooled"):
        settings = ExplainSettings(bundle=BUNDLE, metrics_port=None, log_json=False, ablation_engine=engine)
        cores[engine] = ExplainCore(settings, cache=shared)
        cores[engine].load()
    cell = image(paths["monocyte"])
    reference = cores["library"].explain(cell, "svm")
    fast = cores["pooled"].explain(cell, "svm")
    assert not reference.cache_hit and not fast.cache_hit
    assert fast.method == reference.method == "ablationcam" and fast.class_name == reference.class_name
    np.testing.assert_allclose(fast.heatmap, reference.heatmap, atol=2e-4)
    assert cores["pooled"].explain(cell, "svm").cache_hit and cores["library"].explain(cell, "svm").cache_hit
    assert not cores["library"].explain(cell, "logistic_regression").cache_hit
    assert cores["pooled"].explain(cell, "logistic_regression").cache_hit
