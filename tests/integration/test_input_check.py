"""The input check through the real service path: the feature service checks what it embeds, the
classifier refers what is not a single cell, the gateway says why. Real servers on port 0, the committed
bundle, the repository's samples; no class probabilities are assumed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.data import REPO_ROOT
from hemascope.server import ManagedServer
from hemascope.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    classifier_pb2,
    common_pb2,
    feature_pb2,
    feature_pb2_grpc,
)
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings
from tests.conftest import encode
from tests.grpc_helpers import error_reason, rpc_error

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
SAMPLES = REPO_ROOT / "samples"
WAIT = 180.0
Stub = analysis_pb2_grpc.AnalysisServiceStub


@pytest.fixture(scope="module")
def ports(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    common = {"port": 0, "metrics_port": None, "log_json": False}
    servers: list[ManagedServer] = []
    feature, feature_port = feature_server(
        FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
    )
    servers.append(feature)
    classifier, classifier_port = classifier_server(ClassifierSettings(**common, bundle=BUNDLE))
    servers.append(classifier)
    for server in servers:
        server.wait_ready(WAIT)
    settings = GatewaySettings(
        **common,
        feature_address=f"127.0.0.1:{feature_port}",
        classifier_address=f"127.0.0.1:{classifier_port}",
        detector_address="",
        explain_address="",
        audit_log=tmp_path_factory.mktemp("audit") / "audit.jsonl",
    )
    gateway, gateway_port = create_server(settings)
    gateway.wait_ready(WAIT)
    servers.append(gateway)
    yield {"feature": feature_port, "gateway": gateway_port}
    for server in reversed(servers):
        server.stop(1)


@pytest.fixture
def gateway(ports: dict[str, int], channel_to: Callable[[int], grpc.Channel]) -> Stub:
    return Stub(channel_to(ports["gateway"]))


def analyze(stub: Stub, data: bytes) -> analysis_pb2.AnalyzeResponse:
    request = analysis_pb2.AnalyzeRequest(image=common_pb2.Image(data=data))
    response: analysis_pb2.AnalyzeResponse = stub.Analyze(request, timeout=120)
    return response


def test_a_smear_is_classified_but_referred_with_the_reason(
    gateway: Stub,
) -> None:
    response = analyze(gateway, (SAMPLES / "smear" / "BloodImage_00002.jpg").read_bytes())
    check = response.input_check
    assert check.kind == common_pb2.INPUT_KIND_MULTIPLE_CELLS
    assert "not a single-cell image" in check.reason and check.revision >= 1
    c = response.classification
    assert c.consensus_label and c.predictions  # the prediction is still computed, for the reviewer
    assert c.refer
    assert c.refer_reasons[0] == f"input: {check.reason}"
    assert all(p.abstain for p in c.predictions)
    assert {p.refer_reason for p in c.predictions} == {classifier_pb2.REFER_REASON_NOT_SINGLE_CELL}


@pytest.mark.parametrize("name", ["MO_100695.jpg", "SNE_102699.jpg"])
def test_a_single_cell_is_answered_as_before(gateway: Stub, name: str) -> None:
    response = analyze(gateway, (SAMPLES / name).read_bytes())
    assert response.input_check.kind == common_pb2.INPUT_KIND_SINGLE_CELL
    c = response.classification
    assert c.consensus_label
    assert not any(reason.startswith("input:") for reason in c.refer_reasons)
    assert classifier_pb2.REFER_REASON_NOT_SINGLE_CELL not in {p.refer_reason for p in c.predictions}


def test_a_blank_image_is_refused_with_a_clear_message(gateway: Stub) -> None:
    blank = encode(np.full((363, 360, 3), (245, 222, 200), np.uint8))
    error = rpc_error(lambda: analyze(gateway, blank))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "BLANK_IMAGE"
    assert "blank" in str(error.details())


def test_the_feature_service_reports_the_check_on_each_embedding(
    ports: dict[str, int], channel_to: Callable[[int], grpc.Channel]
) -> None:
    stub = feature_pb2_grpc.FeatureServiceStub(channel_to(ports["feature"]))
    images = [
        common_pb2.Image(data=(SAMPLES / "BA_101611.jpg").read_bytes(), image_id="cell"),
        common_pb2.Image(data=encode(np.full((64, 64, 3), 255, np.uint8)), image_id="blank"),
        common_pb2.Image(data=(SAMPLES / "smear" / "BloodImage_00002.jpg").read_bytes(), image_id="smear"),
    ]
    response = stub.EmbedBatch(feature_pb2.EmbedBatchRequest(images=images), timeout=120)
    cell, blank, smear = response.results
    assert cell.result.embedding.input_check.kind == common_pb2.INPUT_KIND_SINGLE_CELL
    assert blank.error.reason == "BLANK_IMAGE" and blank.error.field == "image.data"
    assert smear.result.embedding.input_check.kind == common_pb2.INPUT_KIND_MULTIPLE_CELLS
    assert "not a single-cell image" in smear.result.embedding.input_check.reason


def test_a_repeated_image_is_checked_once_and_keeps_its_verdict(
    model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hemascope.imaging.inputs import ImageInput
    from services.feature import core as feature_core

    calls: list[int] = []
    real_check = feature_core.check_input

    def counting(pixels: np.ndarray, **options: Any) -> feature_core.InputCheck:
        calls.append(1)
        return real_check(pixels, **options)

    monkeypatch.setattr(feature_core, "check_input", counting)
    core = feature_core.FeatureCore(FeatureSettings(model_cache_dir=model_cache_dir))
    core.load()
    try:
        smear = ImageInput((REPO_ROOT / "samples/smear/BloodImage_00002.jpg").read_bytes())
        first, second = core.embed(smear), core.embed(smear)
    finally:
        core.close()
    assert len(calls) == 1 and not first.cache_hit and second.cache_hit
    assert first.input_check == second.input_check and first.input_check is not None
    assert first.input_check.kind is not feature_core.InputKind.SINGLE_CELL
