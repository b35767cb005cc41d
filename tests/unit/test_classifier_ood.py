"""The classifier service's referral: out-of-distribution flags combined with low confidence, through the
core and the converters; bundles without an OOD model (like the committed one) serve with OOD fields off."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hemascope.bundle import load_bundle
from hemascope.data import REPO_ROOT
from hemascope.v1 import classifier_pb2
from services.classifier.converters import classify_response, list_models_response
from services.classifier.core import REFER_BOTH, REFER_LOW_CONFIDENCE, REFER_NONE, REFER_OOD, ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle, synthetic_data

SPEC = SyntheticSpec(version="ood", ood_quantile=0.95, abstain_thresholds={"svm": 0.8})
COMMITTED = REPO_ROOT / "models" / "bloodcells-5class"


def _core(bundle: Path) -> ClassifierCore:
    core = ClassifierCore(ClassifierSettings(bundle=bundle, metrics_port=None, max_embeddings=256))
    core.load()
    return core


@pytest.fixture(scope="module")
def ood_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClassifierCore]:
    root = tmp_path_factory.mktemp("ood") / "bundle"
    build_synthetic_bundle(root, SPEC)
    core = _core(root)
    yield core
    core.close()


def _inputs(vectors: np.ndarray) -> list[EmbeddingInput]:
    return [EmbeddingInput(np.asarray(v, dtype=np.float32)) for v in vectors]


def test_far_embeddings_are_out_of_distribution_and_referred(ood_core: ClassifierCore) -> None:
    x, _ = synthetic_data(SPEC, 100)
    far = x[:20] + 25.0
    result = ood_core.classify(_inputs(np.concatenate([x, far])), ["logistic_regression", "svm"])
    for out in result.outputs:
        typical, unusual = slice(0, 100), slice(100, 120)
        assert out.out_of_distribution[unusual].all(), out.name
        assert out.out_of_distribution[typical].mean() < 0.2, out.name
        assert out.abstain[unusual].all()  # however confident the label
        assert (out.ood_score[unusual] > out.ood_score[typical].max()).all()
        low = out.confidence < ood_core.served.bundle.models[out.name].entry.abstain_threshold
        expected = np.where(low, REFER_LOW_CONFIDENCE, REFER_NONE) + np.where(
            out.out_of_distribution, REFER_OOD, 0
        )
        assert np.array_equal(out.refer_reason, expected)
        assert np.array_equal(out.abstain, low | out.out_of_distribution)
    assert REFER_BOTH == REFER_LOW_CONFIDENCE + REFER_OOD


def test_converters_carry_the_ood_fields(ood_core: ClassifierCore) -> None:
    x, _ = synthetic_data(SPEC, 5)
    result = ood_core.classify(_inputs(np.concatenate([x, x[:1] + 25.0])), ["logistic_regression"])
    response = classify_response(result)
    last = response.results[-1].predictions[0]
    assert last.out_of_distribution and last.abstain and last.ood_score > 0
    assert last.refer_reason in (
        classifier_pb2.REFER_REASON_OUT_OF_DISTRIBUTION,
        classifier_pb2.REFER_REASON_LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION,
    )
    info = list_models_response(ood_core.served, max_embeddings=1, last_reload_error="")
    assert all(m.ood_threshold > 0 for m in info.models)


def _without_ood(source: Path, target: Path) -> Path:
    """A copy of ``source`` as bundles were before OOD models: no ood.npz, no OOD fields in the manifest."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / manifest.pop("ood_file")).unlink()
    manifest.pop("ood_sha256")
    for entry in manifest["models"].values():
        entry.pop("ood_threshold", None)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_the_committed_bundle_refers_out_of_distribution_cells() -> None:
    bundle = load_bundle(COMMITTED)
    assert bundle.ood is not None
    assert all(model.entry.ood_threshold > 0 for model in bundle.models.values())


def test_a_bundle_without_ood_still_serves_with_ood_fields_off(tmp_path: Path) -> None:
    old = _without_ood(COMMITTED, tmp_path / "bundle")
    bundle = load_bundle(old)
    assert bundle.ood is None
    core = _core(old)
    try:
        rng = np.random.default_rng(0)
        result = core.classify(_inputs(rng.normal(size=(4, bundle.manifest.dimension))))
        response = classify_response(result)
        for item in response.results:
            for prediction in item.predictions:
                assert prediction.ood_score == 0.0 and not prediction.out_of_distribution
                assert prediction.refer_reason in (
                    classifier_pb2.REFER_REASON_UNSPECIFIED,
                    classifier_pb2.REFER_REASON_LOW_CONFIDENCE,
                )
                assert prediction.abstain == (
                    prediction.refer_reason != classifier_pb2.REFER_REASON_UNSPECIFIED
                )
        info = list_models_response(core.served, max_embeddings=1, last_reload_error="")
        assert all(m.ood_threshold == 0.0 for m in info.models)
    finally:
        core.close()
