"""The gateway over real gRPC in front of the real feature, classifier, detector and explain services (all
in-process on port 0, the committed models, real images): full reports, partial results when a service is
down, the circuit breaker and recovery, deadlines, bad images, streaming, capabilities and the audit trail."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

import gateway.core
from gateway.audit import verify
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.data import REPO_ROOT
from hemascope.imaging import content_hash, decode_image
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2, explain_pb2, explain_pb2_grpc
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.explain.server import create_server as explain_server
from services.explain.settings import ExplainSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings
from tests.grpc_helpers import error_reason, rpc_error

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 180.0
OK, UNAVAILABLE, DEADLINE = (
    0,
    grpc.StatusCode.UNAVAILABLE.value[0],
    grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
)
Stub = analysis_pb2_grpc.AnalysisServiceStub


@dataclass
class Stack:
    servers: dict[str, ManagedServer]
    ports: dict[str, int]
    gateway_port: int
    audit: Path

    def start_detector(self, port: int = 0) -> None:
        server, bound = detector_server(
            DetectorSettings(port=port, metrics_port=None, log_json=False, intra_op_threads=1)
        )
        server.wait_ready(WAIT)
        self.servers["detector"], self.ports["detector"] = server, bound


@pytest.fixture(scope="module")
def stack(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    common = {"port": 0, "metrics_port": None, "log_json": False}
    starting = {
        "feature": feature_server(
            FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
        ),
        "classifier": classifier_server(ClassifierSettings(**common, bundle=BUNDLE)),
        # the library Ablation-CAM engine (one model call per channel) keeps a random-forest explanation slow
        # enough to hold the explain service busy in the deadline test
        "explain": explain_server(
            ExplainSettings(**common, bundle=BUNDLE, torch_threads=1, ablation_engine="library")
        ),
    }
    stack = Stack(
        {name: s for name, (s, _) in starting.items()}, {n: p for n, (_, p) in starting.items()}, 0, Path()
    )
    stack.start_detector()
    for server in stack.servers.values():
        server.wait_ready(WAIT)
    stack.audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    settings = GatewaySettings(
        **common,
        feature_address=f"127.0.0.1:{stack.ports['feature']}",
        classifier_address=f"127.0.0.1:{stack.ports['classifier']}",
        detector_address=f"127.0.0.1:{stack.ports['detector']}",
        explain_address=f"127.0.0.1:{stack.ports['explain']}",
        audit_log=stack.audit,
        breaker_failures=3,
        breaker_reset_s=1.0,
        retries=2,
        retry_backoff_ms=20,
        max_stream_in_flight=4,
        capabilities_ttl_s=0.5,
    )
    gateway, stack.gateway_port = create_server(settings)
    gateway.wait_ready(WAIT)
    yield stack
    gateway.stop(1)
    for server in stack.servers.values():
        server.stop(1)


@pytest.fixture
def stub(stack: Stack, channel_to: Callable[[int], grpc.Channel]) -> Stub:
    return Stub(channel_to(stack.gateway_port))


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[Path]:
    root = data_dir / "bloodcells-5class" / "val"
    return [
        path
        for name in ("monocyte", "myeloblast", "basophil")
        for path in sorted((root / name).glob("*.jpg"))[:8]
    ]


@pytest.fixture(scope="module")
def smear(data_dir: Path) -> Path:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    return data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"


def analyze(
    stub: Stub, data: bytes, timeout: float = 120.0, **options: object
) -> analysis_pb2.AnalyzeResponse:
    request = analysis_pb2.AnalyzeRequest(
        image=common_pb2.Image(data=data, image_id="case-7"), options=analysis_pb2.AnalyzeOptions(**options)
    )
    response: analysis_pb2.AnalyzeResponse = stub.Analyze(request, timeout=timeout)
    return response


def parts(response: analysis_pb2.AnalyzeResponse) -> dict[str, analysis_pb2.PartStatus]:
    return {part.part: part for part in response.parts}


def test_health_turns_serving_and_capabilities_describe_every_service(
    stack: Stack, stub: Stub, channel_to: Callable[[int], grpc.Channel]
) -> None:
    health = health_pb2_grpc.HealthStub(channel_to(stack.gateway_port))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    caps = stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)
    assert list(caps.classes) == ["basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil"]
    assert list(caps.malignant_classes) == ["myeloblast"]
    models = {m.name: m for m in caps.models}
    assert set(models) == {"logistic_regression", "svm", "random_forest", "xgboost", "kmeans"}
    assert models["logistic_regression"].explain_methods[0] == "gradcam"
    assert models["svm"].explain_methods[0] == "ablationcam"
    assert caps.embedding.backbone == "efficientnet_lite0_blood" and len(caps.embedding.weights_hash) == 64
    assert len(caps.detector_version) == 12 and "WBC" in caps.detector_classes
    assert caps.max_stream_in_flight == 4
    assert [(s.name, s.serving, s.circuit_open) for s in caps.services] == [
        ("feature", True, False),
        ("classifier", True, False),
        ("detector", True, False),
        ("explain", True, False),
    ]


def test_a_cell_with_explanation_and_detection(stub: Stub, cells: list[Path]) -> None:
    data = cells[0].read_bytes()
    response = analyze(stub, data, detect=True, explain=True)
    assert {name: p.code for name, p in parts(response).items()} == {
        "embedding": OK,
        "classification": OK,
        "detection": OK,
        "explanation": OK,
    }
    assert response.image_id == "case-7"
    assert response.content_hash == content_hash(decode_image(data).pixels)
    assert (response.width, response.height) == (360, 363)
    c = response.classification
    assert len(c.predictions) == 5
    lr = next(p for p in c.predictions if p.model == "logistic_regression")
    means = {
        name: sum(next(q.probability for q in p.probabilities if q.class_name == name) for p in c.predictions)
        / 5
        for name in ("monocyte", "myeloblast")
    }
    assert c.consensus_probability == pytest.approx(
        max(means.values()) if c.consensus_label in means else c.consensus_probability
    )
    assert c.malignant_probability == pytest.approx(sum(p.malignant_probability for p in c.predictions) / 5)
    assert c.refer == bool(c.refer_reasons)
    e = response.explanation
    assert e.model == "logistic_regression" and e.method == "gradcam" and e.class_name == lr.label
    assert e.class_probability == pytest.approx(lr.confidence, abs=1e-6)  # from the same embedding
    assert e.overlay_png.startswith(b"\x89PNG") and e.heat_map.height * e.heat_map.width == len(
        e.heat_map.values
    )
    assert response.detection.model_version and response.embedding.backbone == "efficientnet_lite0_blood"
    versions = dict(response.model_versions)
    assert {
        "feature",
        "classifier",
        "detector",
        "explain",
        "classifier/svm",
        "explain/logistic_regression",
    } <= set(versions)
    assert {t.stage for t in response.timings} >= {
        "decode",
        "embedding",
        "classification",
        "detection",
        "explanation",
        "total",
    }


class Decodes:
    """Counts the gateway's calls of the real decode_image (each still decodes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return decode_image(*args, **kwargs)

        monkeypatch.setattr(gateway.core, "decode_image", counted)


def test_a_classified_image_is_named_by_the_feature_services_decode_not_decoded_again(
    stub: Stub, cells: list[Path], smear: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = Decodes(monkeypatch)
    data = cells[5].read_bytes()
    response = analyze(stub, data, detect=True)
    assert all(p.code == OK for p in response.parts)
    assert decodes.count == 0  # the header read, the pixels decoded once, by the feature service
    assert response.content_hash == content_hash(decode_image(data).pixels)
    assert (response.width, response.height) == (360, 363)
    assert analyze(stub, data).content_hash == response.content_hash and decodes.count == 0
    # nothing classified: the gateway decodes and names the image itself
    analyze(stub, smear.read_bytes(), skip_classification=True, detect=True)
    assert decodes.count == 1
    # a body the feature service refuses is decoded, and refused, by the gateway too
    error = rpc_error(lambda: analyze(stub, cells[6].read_bytes()[:5000]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "CORRUPT_IMAGE"
    assert decodes.count == 2


def test_a_smear_with_detection_only(stub: Stub, smear: Path) -> None:
    response = analyze(stub, smear.read_bytes(), skip_classification=True, detect=True)
    assert [(p.part, p.code) for p in response.parts] == [("detection", OK)]
    assert not response.HasField("classification") and not response.HasField("embedding")
    classes = {box.class_name for box in response.detection.boxes}
    assert "RBC" in classes and len(response.detection.boxes) > 5
    assert all(0 <= box.x1 < box.x2 <= response.width for box in response.detection.boxes)


def test_bad_requests_are_refused_and_nothing_else_breaks(stub: Stub, cells: list[Path]) -> None:
    data = cells[1].read_bytes()
    error = rpc_error(lambda: analyze(stub, data[: len(data) // 2]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "CORRUPT_IMAGE"
    error = rpc_error(lambda: analyze(stub, data, models=["no_such_model"]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "UNKNOWN_OPTION"
    error = rpc_error(lambda: stub.Analyze(analysis_pb2.AnalyzeRequest(), timeout=30))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    response = analyze(stub, data, models=["svm", "kmeans"])
    assert [p.model for p in response.classification.predictions] == ["svm", "kmeans"]
    assert all(p.code == OK for p in response.parts)


def test_a_deadline_shorter_than_the_explanation(
    stack: Stack, stub: Stub, cells: list[Path], channel_to: Callable[[int], grpc.Channel]
) -> None:
    """The explain service is kept busy (2 running, 2 queued), so the gateway's explanation waits in its
    queue past the caller's 0.8 s deadline while embedding and classification finish well within it."""
    data = cells[2].read_bytes()
    analyze(stub, data)  # the embedding is now cached: embedding + classification take milliseconds
    explain = explain_pb2_grpc.ExplainServiceStub(channel_to(stack.ports["explain"]))
    busy = [
        explain.Explain.future(
            explain_pb2.ExplainRequest(
                image=common_pb2.Image(data=cell.read_bytes()), model="random_forest", skip_cache=True
            ),
            timeout=120,
        )
        for cell in cells[4:8]
    ]
    time.sleep(0.2)
    started = time.monotonic()
    response = analyze(stub, data, timeout=0.8, explain=True, explain_model="random_forest")
    assert time.monotonic() - started < 0.8 + 1.0
    status = parts(response)
    assert status["classification"].code == OK and status["embedding"].code == OK
    assert status["explanation"].code == DEADLINE and status["explanation"].reason == "DEADLINE_EXCEEDED"
    assert status["explanation"].elapsed_ms < 1000
    assert not response.HasField("explanation") and len(response.classification.predictions) == 5
    for call in busy:
        call.result()


def test_stream_of_20_requests_returns_20_tagged_results(stub: Stub, cells: list[Path]) -> None:
    requests = [
        analysis_pb2.AnalyzeStreamRequest(
            request_id=f"req-{i}",
            request=analysis_pb2.AnalyzeRequest(
                image=common_pb2.Image(data=cells[i % len(cells)].read_bytes())
            ),
        )
        for i in range(19)
    ]
    requests.insert(
        7, analysis_pb2.AnalyzeStreamRequest(request_id="bad", request=analysis_pb2.AnalyzeRequest())
    )
    answers = {answer.request_id: answer for answer in stub.AnalyzeStream(iter(requests), timeout=300)}
    assert set(answers) == {f"req-{i}" for i in range(19)} | {"bad"}
    assert answers["bad"].WhichOneof("outcome") == "error"
    assert answers["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for i in range(19):
        result = answers[f"req-{i}"].result
        assert result.content_hash and result.classification.consensus_label
        assert all(p.code == OK for p in result.parts)


def test_a_stopped_service_gives_partial_results_opens_the_breaker_and_recovers(
    stack: Stack, stub: Stub, cells: list[Path]
) -> None:
    data = cells[3].read_bytes()
    port = stack.ports["detector"]
    stack.servers["detector"].stop(0)
    response = analyze(stub, data, detect=True)
    status = parts(response)
    assert status["detection"].code == UNAVAILABLE and status["detection"].reason == "SERVICE_UNAVAILABLE"
    assert status["embedding"].code == OK and status["classification"].code == OK
    assert response.classification.consensus_label and not response.HasField("detection")
    # one Analyze made 3 attempts (2 retries): the breaker (3 failures) is open and fails fast
    started = time.monotonic()
    status = parts(analyze(stub, data, detect=True))
    assert status["detection"].reason == "CIRCUIT_OPEN" and status["detection"].elapsed_ms < 100
    assert time.monotonic() - started < 5
    caps = stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)
    detector = next(s for s in caps.services if s.name == "detector")
    assert detector.circuit_open and not detector.serving and caps.detector_version == ""
    assert REGISTRY.get_sample_value("hemascope_gateway_breaker_state", {"service": "detector"}) == 2
    failures = {"part": "detection", "code": "UNAVAILABLE"}
    assert (REGISTRY.get_sample_value("hemascope_gateway_part_failures_total", failures) or 0) >= 2
    stack.start_detector(port)
    time.sleep(1.0)  # breaker_reset_s: the next call is the trial
    recovered = None
    for _ in range(20):  # the channel may still be backing off its reconnection for a moment
        status = parts(analyze(stub, data, detect=True))
        if status["detection"].code == OK:
            recovered = status
            break
        time.sleep(0.25)
    assert recovered is not None, status["detection"]
    assert all(p.code == OK for p in recovered.values())
    assert REGISTRY.get_sample_value("hemascope_gateway_breaker_state", {"service": "detector"}) == 0
    caps = stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)
    detector = next(s for s in caps.services if s.name == "detector")
    assert detector.serving and not detector.circuit_open and caps.detector_version


def test_every_call_is_audited_without_image_ids(stack: Stack) -> None:
    result = verify(stack.audit)
    assert result.ok, result.message
    records = [json.loads(line) for line in stack.audit.read_text().splitlines()]
    assert result.records == len(records) >= 25
    assert "case-7" not in stack.audit.read_text()
    refused = [r for r in records if r["outcome"] == "INVALID_ARGUMENT"]
    assert len(refused) >= 4
    streamed = [r for r in records if r["rpc"] == "AnalyzeStream"]
    assert len(streamed) == 20
    full = next(r for r in records if r["parts"].get("explanation") == "OK")
    assert full["options"]["explain"] is True and full["model_versions"]["classifier"]
    assert len(full["content_hash"]) == 64


def test_a_service_the_gateway_runs_without_is_not_running_never_a_circuit_trip(
    stack: Stack, channel_to: Callable[[int], grpc.Channel], cells: list[Path]
) -> None:
    settings = GatewaySettings(
        port=0,
        metrics_port=None,
        log_json=False,
        feature_address=f"127.0.0.1:{stack.ports['feature']}",
        classifier_address=f"127.0.0.1:{stack.ports['classifier']}",
        detector_address="",
        explain_address="",
        breaker_failures=2,
    )
    gateway, port = create_server(settings)
    try:
        gateway.wait_ready(WAIT)
        without = Stub(channel_to(port))
        data = cells[0].read_bytes()
        for _ in range(4):  # twice the breaker's threshold
            response = analyze(without, data, explain=True, detect=True)
            found = parts(response)
            assert found["classification"].code == OK
            for part, service in (("explanation", "explain"), ("detection", "detector")):
                assert found[part].code == UNAVAILABLE
                assert found[part].reason == "NOT_RUNNING"
                assert f"the {service} service is not running" in found[part].message
        caps = without.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)
        assert [(s.name, s.serving, s.circuit_open, s.not_running) for s in caps.services] == [
            ("feature", True, False, False),
            ("classifier", True, False, False),
            ("detector", False, False, True),
            ("explain", False, False, True),
        ]
        assert list(caps.classes)  # the classifier still described its bundle
    finally:
        gateway.stop(1)


def test_the_overlay_style_passes_through_to_the_explanation(stub: Stub, cells: list[Path]) -> None:
    data = cells[1].read_bytes()
    assert analyze(stub, data, explain=True).explanation.overlay == "focus"
    study = analyze(stub, data, explain=True, explain_overlay="jet40")
    assert study.explanation.overlay == "jet40" and study.explanation.overlay_png
    wrong = parts(analyze(stub, data, explain=True, explain_overlay="sepia"))["explanation"]
    assert wrong.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "unknown overlay style" in wrong.message
