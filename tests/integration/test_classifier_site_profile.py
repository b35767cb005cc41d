"""Site profiles through the real classifier service (port 0): a call naming a profile is answered with
the profile's probabilities and says so; ListModels names the profiles; bad names get their status."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from hemascope.bundle import load_bundle
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc, common_pb2
from services.classifier.server import create_server
from services.classifier.settings import ClassifierSettings
from tests.grpc_helpers import error_reason, rpc_error
from tests.site_profile_fixtures import SPEC, ProfileSetup, profile_setup, site_cells

__all__ = ["profile_setup"]
WAIT = 30.0
X, _ = site_cells(8, seed=13)
Stub = classifier_pb2_grpc.ClassifierServiceStub


@pytest.fixture(scope="module")
def port(profile_setup: ProfileSetup) -> Iterator[int]:
    settings = ClassifierSettings(
        port=0,
        metrics_port=None,
        bundle=profile_setup.bundle,
        site_profiles=profile_setup.profiles,
        log_json=False,
    )
    server, bound = create_server(settings)
    server.wait_ready(WAIT)
    yield bound
    server.stop(1)


def _request(profile: str = "") -> classifier_pb2.ClassifyRequest:
    embeddings = [
        common_pb2.Embedding(values=row.tolist(), dimension=len(row), backbone=SPEC.backbone) for row in X
    ]
    return classifier_pb2.ClassifyRequest(embeddings=embeddings, site_profile=profile)


def _probabilities(response: classifier_pb2.ClassifyResponse, model: str) -> np.ndarray:
    return np.array(
        [
            [p.probability for p in prediction.probabilities]
            for result in response.results
            for prediction in result.predictions
            if prediction.model == model
        ]
    )


def test_classify_applies_the_named_profile(
    port: int, profile_setup: ProfileSetup, channel_to: Callable[[int], grpc.Channel]
) -> None:
    stub = Stub(channel_to(port))
    plain = stub.Classify(_request(), timeout=WAIT)
    adapted = stub.Classify(_request("lab-a"), timeout=WAIT)
    assert (plain.site_profile, adapted.site_profile) == ("", "lab-a")
    bundle = load_bundle(profile_setup.bundle)
    scaled = bundle.scale(X)
    for model in SPEC.models:
        _, expected = profile_setup.profile.proba(bundle, model, scaled)
        np.testing.assert_allclose(_probabilities(adapted, model), expected, atol=1e-9)
        np.testing.assert_allclose(
            _probabilities(plain, model), bundle.models[model].proba(scaled), atol=1e-9
        )
    listed = stub.ListModels(classifier_pb2.ListModelsRequest(), timeout=WAIT)
    assert list(listed.site_profiles) == ["lab-a"]


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        ("nowhere", grpc.StatusCode.NOT_FOUND, "UNKNOWN_SITE_PROFILE"),
        ("other-bundle", grpc.StatusCode.FAILED_PRECONDITION, "SITE_PROFILE_BUNDLE_MISMATCH"),
        ("damaged", grpc.StatusCode.FAILED_PRECONDITION, "BAD_SITE_PROFILE"),
        ("a/b", grpc.StatusCode.INVALID_ARGUMENT, "BAD_SITE_PROFILE_NAME"),
    ],
)
def test_bad_profile_names_get_their_status(
    port: int, channel_to: Callable[[int], grpc.Channel], name: str, code: grpc.StatusCode, reason: str
) -> None:
    stub = Stub(channel_to(port))
    error = rpc_error(lambda: stub.Classify(_request(name), timeout=WAIT))
    assert error.code() == code
    assert error_reason(error) == reason
    assert stub.Classify(_request("lab-a"), timeout=WAIT).site_profile == "lab-a"
