"""The gateway applies each caller's site profile: the classifier answers that caller with the profile made by
``hemascope site adapt`` for its laboratory, says so in ``model_versions``, and a profile the classifier does
not serve fails the classification part with NOT_FOUND instead of answering without it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from gateway.auth import add_key
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings
from tests.integration.test_site_adapt_cli import BUNDLE, _run, lab  # noqa: F401 (the fixture)

WAIT = 180.0
Stub = analysis_pb2_grpc.AnalysisServiceStub


@pytest.fixture(scope="module")
def stack(
    lab: Path,  # noqa: F811
    model_cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("gateway-profile")
    done = _run("--bundle", BUNDLE, "--data", f"jhu={lab}", "--out", root / "profiles" / "jhu-lab")
    assert done.returncode == 0, done.stderr
    keys = root / "keys"
    callers = {name: add_key(keys, name) for name in ("adapted-lab", "plain-lab", "misconfigured-lab")}
    common = {"port": 0, "metrics_port": None, "log_json": False}
    feature, feature_port = feature_server(
        FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
    )
    classifier, classifier_port = classifier_server(
        ClassifierSettings(**common, bundle=BUNDLE, site_profiles=root / "profiles")
    )
    servers: list[ManagedServer] = [feature, classifier]
    for server in servers:
        server.wait_ready(WAIT)
    gateway, port = create_server(
        GatewaySettings(
            **common,
            feature_address=f"127.0.0.1:{feature_port}",
            classifier_address=f"127.0.0.1:{classifier_port}",
            detector_address="",
            explain_address="",
            api_keys_file=keys,
            site_profiles={"adapted-lab": "jhu-lab", "misconfigured-lab": "no-such-profile"},
        )
    )
    gateway.wait_ready(WAIT)
    servers.append(gateway)
    yield {"port": port, "keys": callers, "image": next(lab.rglob("*.jpg")).read_bytes()}
    for server in reversed(servers):
        server.stop(1)


def test_each_caller_is_answered_with_its_own_profile(
    stack: dict[str, object], channel_to: Callable[[int], grpc.Channel]
) -> None:
    stub = Stub(channel_to(int(stack["port"])))  # type: ignore[call-overload]
    keys = stack["keys"]
    assert isinstance(keys, dict) and isinstance(stack["image"], bytes)
    request = analysis_pb2.AnalyzeRequest(image=common_pb2.Image(data=stack["image"]))

    def analyze(caller: str) -> analysis_pb2.AnalyzeResponse:
        response: analysis_pb2.AnalyzeResponse = stub.Analyze(
            request, metadata=[("x-api-key", keys[caller])], timeout=WAIT
        )
        return response

    adapted, plain, misconfigured = analyze("adapted-lab"), analyze("plain-lab"), analyze("misconfigured-lab")
    assert adapted.model_versions["classifier/site_profile"] == "jhu-lab"
    assert adapted.classification.consensus_label
    assert "classifier/site_profile" not in plain.model_versions and plain.classification.consensus_label
    part = {p.part: p for p in misconfigured.parts}["classification"]
    assert part.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert not misconfigured.HasField("classification")
