"""Tracing through the real stack: the gateway and the feature, classifier, detector and explain services
in-process on port 0, each exporting its spans over OTLP/gRPC to a real collector served by the test.

One Analyze (classification, detection, explanation) makes one trace holding spans of every service: the
gateway's call and part spans, its client call to each service, each service's server span and its core's
steps (the embedding, each classifier model, the detection, the explanation); the audit record names the
trace. With tracing off nothing reaches the collector and the answer is the same."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.bundle import load_bundle
from hemascope.data import REPO_ROOT
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc, common_pb2
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.explain.server import create_server as explain_server
from services.explain.settings import ExplainSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings
from tests.otlp_collector import CollectedSpan, Collector, otlp_collector

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 180.0
SERVICES = ("feature", "classifier", "detector", "explain")


@dataclass
class Stack:
    servers: dict[str, ManagedServer]
    gateway_port: int
    audit: Path

    def flush(self) -> None:
        for server in self.servers.values():
            assert server.tracing.force_flush()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop(1)


def start_stack(model_cache_dir: Path, audit: Path, endpoint: str | None) -> Stack:
    common = {"port": 0, "metrics_port": None, "log_json": False, "tracing_endpoint": endpoint}
    starting = {
        "feature": feature_server(
            FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
        ),
        "classifier": classifier_server(ClassifierSettings(**common, bundle=BUNDLE)),
        "detector": detector_server(DetectorSettings(**common, intra_op_threads=1)),
        "explain": explain_server(ExplainSettings(**common, bundle=BUNDLE, torch_threads=1)),
    }
    servers = {name: server for name, (server, _) in starting.items()}
    for server in servers.values():
        server.wait_ready(WAIT)
    settings = GatewaySettings(
        **common,
        **{f"{name}_address": f"127.0.0.1:{port}" for name, (_, port) in starting.items()},
        audit_log=audit,
    )
    gateway, port = create_server(settings)
    servers["gateway"] = gateway
    gateway.wait_ready(WAIT)
    return Stack(servers, port, audit)


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    with otlp_collector() as running:
        yield running


@pytest.fixture(scope="module")
def traced(
    model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, collector: tuple[Collector, str]
) -> Iterator[Stack]:
    stack = start_stack(model_cache_dir, tmp_path_factory.mktemp("audit") / "audit.jsonl", collector[1])
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def cell(data_dir: Path) -> bytes:
    return sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0].read_bytes()


def analyze(port: int, data: bytes) -> analysis_pb2.AnalyzeResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = analysis_pb2.AnalyzeRequest(
            image=common_pb2.Image(data=data),
            options=analysis_pb2.AnalyzeOptions(detect=True, explain=True),
        )
        response: analysis_pb2.AnalyzeResponse = analysis_pb2_grpc.AnalysisServiceStub(channel).Analyze(
            request, timeout=120
        )
    return response


def comparable(response: analysis_pb2.AnalyzeResponse) -> analysis_pb2.AnalyzeResponse:
    """The answer less what differs between two runs whatever tracing does: times, whether the embedding
    was cached, and the caller's site status (it counts the images this gateway has seen)."""
    copy = analysis_pb2.AnalyzeResponse()
    copy.CopyFrom(response)
    del copy.timings[:]
    copy.embedding.cache_hit = False
    copy.ClearField("site")
    for part in copy.parts:
        part.elapsed_ms = 0
    return copy


def one_analysis(
    stack: Stack, collector: Collector, data: bytes
) -> tuple[analysis_pb2.AnalyzeResponse, list[CollectedSpan]]:
    stack.flush()
    collector.taken()  # what start-up made (the gateway describing the services)
    response = analyze(stack.gateway_port, data)
    stack.flush()
    return response, collector.taken()


def test_one_analyze_is_one_trace_with_spans_of_every_service(
    traced: Stack, collector: tuple[Collector, str], cell: bytes
) -> None:
    response, spans = one_analysis(traced, collector[0], cell)
    assert all(part.code == 0 for part in response.parts), response.parts
    assert {span.trace_id for span in spans} == {spans[0].trace_id}, "one trace"
    trace_id = spans[0].trace_id
    by_id = {span.span_id: span for span in spans}
    roots = [span for span in spans if not span.parent_span_id]
    assert [(root.service, root.name) for root in roots] == [
        ("gateway", "/hemascope.v1.AnalysisService/Analyze")
    ]
    assert all(span.parent_span_id in by_id for span in spans if span.parent_span_id), "no orphans"
    assert {span.service for span in spans} == {"gateway", *SERVICES}

    named = Counter((span.service, span.name) for span in spans)
    for part in ("embedding", "classification", "detection", "explanation"):
        assert named["gateway", part] == 1, part
    for service, method, step in (
        ("feature", "/hemascope.v1.FeatureService/Embed", "feature.embed"),
        ("classifier", "/hemascope.v1.ClassifierService/Classify", "classifier.classify"),
        ("detector", "/hemascope.v1.DetectorService/Detect", "detector.detect"),
        ("explain", "/hemascope.v1.ExplainService/Explain", "explain.explain"),
    ):
        (client,) = [s for s in spans if s.service == "gateway" and s.name == method]
        (server,) = [s for s in spans if s.service == service and s.name == method]
        (inner,) = [s for s in spans if s.service == service and s.name == step]
        assert server.parent_span_id == client.span_id  # the context crossed the wire
        assert inner.parent_span_id == server.span_id
        assert inner.attributes["hemascope.status_code"] == "OK"
        assert server.attributes["rpc.grpc.status_code"] == 0

    embed = next(s for s in spans if s.name == "feature.embed")
    assert embed.attributes["hemascope.backbone"] == response.embedding.backbone
    assert embed.attributes["hemascope.cache_hit"] is False
    models = [s for s in spans if s.name == "classifier.model"]
    classify = next(s for s in spans if s.name == "classifier.classify")
    assert sorted(str(s.attributes["hemascope.model"]) for s in models) == sorted(load_bundle(BUNDLE).models)
    assert all(s.parent_span_id == classify.span_id for s in models)
    assert all(s.attributes["hemascope.backbone"] == response.embedding.backbone for s in models)
    explain = next(s for s in spans if s.name == "explain.explain")
    assert explain.attributes["hemascope.model"] == response.explanation.model
    assert explain.attributes["hemascope.method"] == response.explanation.method

    records = [json.loads(line) for line in traced.audit.read_text().splitlines()]
    assert records[-1]["rpc"] == "Analyze"
    assert (records[-1]["v"], records[-1]["trace_id"]) == (3, trace_id)


def test_the_same_image_again_is_another_trace_with_the_cache_hit(
    traced: Stack, collector: tuple[Collector, str], cell: bytes
) -> None:
    first = one_analysis(traced, collector[0], cell)[1]
    second = one_analysis(traced, collector[0], cell)[1]
    assert {s.trace_id for s in first}.isdisjoint({s.trace_id for s in second})
    embed = next(s for s in second if s.name == "feature.embed")
    assert embed.attributes["hemascope.cache_hit"] is True


def test_tracing_off_exports_nothing_and_answers_the_same(
    traced: Stack,
    collector: tuple[Collector, str],
    cell: bytes,
    model_cache_dir: Path,
    tmp_path: Path,
) -> None:
    traced_answer, spans = one_analysis(traced, collector[0], cell)
    assert spans
    plain = start_stack(model_cache_dir, tmp_path / "audit.jsonl", None)
    try:
        assert all(not server.tracing.enabled for server in plain.servers.values())
        plain_answer, spans = one_analysis(plain, collector[0], cell)
    finally:
        plain.stop()
    assert spans == []
    assert comparable(plain_answer) == comparable(traced_answer)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (records[-1]["rpc"], records[-1]["trace_id"]) == ("Analyze", "")


def test_a_stream_is_one_trace_and_spans_carry_no_image_id(
    traced: Stack, collector: tuple[Collector, str], cell: bytes
) -> None:
    traced.flush()
    collector[0].taken()
    requests = [
        analysis_pb2.AnalyzeStreamRequest(
            request_id=f"r{n}",
            request=analysis_pb2.AnalyzeRequest(image=common_pb2.Image(data=cell, image_id=f"patient-{n}")),
        )
        for n in range(2)
    ]
    with grpc.insecure_channel(f"127.0.0.1:{traced.gateway_port}") as channel:
        stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
        answers = list(stub.AnalyzeStream(iter(requests), timeout=120))
    assert sorted(a.request_id for a in answers) == ["r0", "r1"]
    traced.flush()
    spans = collector[0].taken()
    assert len({span.trace_id for span in spans}) == 1  # the stream's requests run in the stream's trace
    assert Counter(span.name for span in spans)["gateway.analyze"] == 2
    assert Counter(span.name for span in spans)["/hemascope.v1.FeatureService/Embed"] == 4  # client+server
    text = json.dumps([span.attributes for span in spans], default=str)
    assert "patient-" not in text
    assert not any(isinstance(v, bytes) for span in spans for v in span.attributes.values())


def test_a_refused_call_records_its_status_code_and_reason(
    traced: Stack, collector: tuple[Collector, str], cell: bytes
) -> None:
    traced.flush()
    collector[0].taken()
    request = analysis_pb2.AnalyzeRequest(
        image=common_pb2.Image(data=cell), options=analysis_pb2.AnalyzeOptions(models=["no-such-model"])
    )
    with (
        grpc.insecure_channel(f"127.0.0.1:{traced.gateway_port}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        analysis_pb2_grpc.AnalysisServiceStub(channel).Analyze(request, timeout=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    traced.flush()
    spans = collector[0].taken()
    (call,) = [s for s in spans if s.name == "/hemascope.v1.AnalysisService/Analyze"]
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert call.attributes["hemascope.reason"] == "UNKNOWN_OPTION"
    (analyze,) = [s for s in spans if s.name == "gateway.analyze"]
    assert analyze.attributes["hemascope.status_code"] == "INVALID_ARGUMENT"
