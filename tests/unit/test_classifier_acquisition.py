"""The classifier's acquisition check: an answer whose image was taken unlike the training images of its class
is referred (REFER_REASON_ATYPICAL_ACQUISITION when nothing else applies); embeddings without a fingerprint,
or with one of another revision, are answered unchecked; bundles without a reference check nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hemascope.imaging.fingerprint import REVISION
from hemascope.v1 import classifier_pb2
from services.classifier.converters import classify_response, list_models_response
from services.classifier.core import REFER_ATYPICAL_ACQUISITION, REFER_NONE, ClassifierCore
from services.classifier.inputs import EmbeddingInput
from services.classifier.settings import ClassifierSettings
from services.classifier.synthetic import (
    SyntheticSpec,
    build_synthetic_bundle,
    synthetic_data,
    synthetic_fingerprints,
)

SPEC = SyntheticSpec(version="acq", site_quantile=0.95, samples=500)
MODELS = ["logistic_regression", "random_forest"]


def _core(root: Path) -> ClassifierCore:
    core = ClassifierCore(ClassifierSettings(bundle=root, metrics_port=None, max_embeddings=512))
    core.load()
    return core


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClassifierCore]:
    root = tmp_path_factory.mktemp("acq") / "bundle"
    build_synthetic_bundle(root, SPEC)
    served = _core(root)
    yield served
    served.close()


def _inputs(x: np.ndarray, fingerprints: np.ndarray | None, revision: int = REVISION) -> list[EmbeddingInput]:
    return [
        EmbeddingInput(
            np.asarray(v, dtype=np.float32),
            acquisition=None if fingerprints is None else fingerprints[i],
            acquisition_revision=revision,
        )
        for i, v in enumerate(x)
    ]


def test_other_acquisitions_are_atypical_and_referred(core: ClassifierCore) -> None:
    x, y = synthetic_data(SPEC, 200)
    same = synthetic_fingerprints(SPEC, y, seed=7)
    other = synthetic_fingerprints(SPEC, y, shift=4.0, seed=8)
    result = core.classify(_inputs(np.concatenate([x, x]), np.concatenate([same, other])), MODELS)
    for out in result.outputs:
        typical, shifted = slice(0, 200), slice(200, 400)
        assert out.acquisition_checked.all()
        # the answered class decides the reference: errors can be atypical too, so allow some slack
        assert out.atypical_acquisition[typical].mean() < 0.2, out.name
        assert out.atypical_acquisition[shifted].all(), out.name
        assert out.abstain[shifted].all()
        assert np.median(out.acquisition_score[shifted]) > 2 * np.median(out.acquisition_score[typical])
        threshold = core.served.bundle.models[out.name].entry.abstain_threshold
        lone = out.atypical_acquisition & ~out.out_of_distribution & (out.confidence >= threshold)
        assert (out.refer_reason[lone] == REFER_ATYPICAL_ACQUISITION).all()
        assert (out.refer_reason[typical][~out.abstain[typical]] == REFER_NONE).all()


def test_missing_or_foreign_fingerprints_are_unchecked(core: ClassifierCore) -> None:
    x, y = synthetic_data(SPEC, 20)
    other = synthetic_fingerprints(SPEC, y, shift=6.0)
    for inputs in (_inputs(x, None), _inputs(x, other, revision=REVISION + 1), _inputs(x, other[:, :5])):
        out = core.classify(inputs, MODELS).outputs[0]
        assert not out.acquisition_checked.any()
        assert not out.atypical_acquisition.any()
        assert (out.acquisition_score == 0).all()


def test_converters_carry_the_check_and_the_reference(core: ClassifierCore) -> None:
    x, y = synthetic_data(SPEC, 5)
    other = synthetic_fingerprints(SPEC, y, shift=6.0)
    response = classify_response(core.classify(_inputs(x, other), ["logistic_regression"]))
    for result in response.results:
        p = result.predictions[0]
        assert p.acquisition_checked and p.atypical_acquisition and p.abstain and p.acquisition_score > 0
        assert p.refer_reason in (
            classifier_pb2.REFER_REASON_ATYPICAL_ACQUISITION,
            classifier_pb2.REFER_REASON_LOW_CONFIDENCE,
        )
    info = list_models_response(core.served, max_embeddings=1, last_reload_error="")
    assert info.acquisition_revision == REVISION
    assert info.expected_atypical_rate == pytest.approx(0.05)


def test_a_bundle_without_a_reference_checks_nothing(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    build_synthetic_bundle(root, SyntheticSpec(version="plain", models=("logistic_regression",)))
    plain = _core(root)
    try:
        x, y = synthetic_data(SPEC, 10)
        out = plain.classify(_inputs(x, synthetic_fingerprints(SPEC, y, shift=6.0))).outputs[0]
        assert not out.acquisition_checked.any() and not out.atypical_acquisition.any()
        info = list_models_response(plain.served, max_embeddings=1, last_reload_error="")
        assert info.acquisition_revision == 0 and info.expected_atypical_rate == 0
    finally:
        plain.close()
