"""Tracing (hemascope.tracing): settings, off by default, W3C trace context over real gRPC calls, spans of
a core's steps, the trace id in log records, and the OTLP exporter against a real collector."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hemascope.errors import NotFound
from hemascope.logs import add_trace_context, configure_logging
from hemascope.settings import ServerSettings
from hemascope.tracing import (
    Tracing,
    TracingConfig,
    current_trace_id,
    in_context,
    setup_tracing,
    step,
)
from services.feature.settings import FeatureSettings
from tests.otlp_collector import otlp_collector

METHOD = "/test.Echo/Context"


def traced(name: str, ratio: float = 1.0) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return setup_tracing(TracingConfig(None, name, ratio), exporter=exporter), exporter


def finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[Any]:
    assert tracing.force_flush()
    return list(exporter.get_finished_spans())


# ---------------------------------------------------------------------------------------------- settings


def test_tracing_is_off_by_default() -> None:
    settings = ServerSettings()
    assert settings.tracing_endpoint is None
    config = settings.tracing_config("feature")
    assert config == TracingConfig(None, "feature", 1.0)
    tracing = setup_tracing(config)
    assert not tracing.enabled
    assert isinstance(tracing.tracer, trace.NoOpTracer)
    assert tracing.server_interceptors() == []
    channel = grpc.insecure_channel("127.0.0.1:1")
    assert tracing.intercept_channel(channel) is channel
    channel.close()


def test_tracing_settings_from_the_services_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_TRACING_ENDPOINT", "http://otel:4317")
    monkeypatch.setenv("HEMASCOPE_FEATURE_TRACING_SAMPLE_RATIO", "0.25")
    assert FeatureSettings().tracing_config("feature") == TracingConfig("http://otel:4317", "feature", 0.25)
    monkeypatch.setenv("HEMASCOPE_FEATURE_TRACING_SERVICE_NAME", "feature-eu")
    assert FeatureSettings().tracing_config("feature").service_name == "feature-eu"
    monkeypatch.setenv("HEMASCOPE_FEATURE_TRACING_SAMPLE_RATIO", "1.5")
    with pytest.raises(ValueError, match="tracing_sample_ratio"):
        FeatureSettings()


def test_off_no_span_is_recorded_and_no_trace_id_is_seen() -> None:
    tracing = setup_tracing(TracingConfig(None, "gateway"))
    with step(tracing.tracer, "embedding", backbone="efficientnet_lite0") as span:
        assert not span.is_recording()
        assert current_trace_id() == ""


# ---------------------------------------------------------------------------------------------- spans


def test_spans_carry_the_service_name_attributes_and_status_code() -> None:
    tracing, exporter = traced("classifier")
    with step(tracing.tracer, "classifier.classify", backbone="efficientnet_lite0", site=None):
        with step(tracing.tracer, "classifier.model", model="svm"):
            pass
        with pytest.raises(NotFound), step(tracing.tracer, "classifier.model", model="knn"):
            raise NotFound("no model knn")
    spans = {str(s.attributes.get("hemascope.model", s.name)): s for s in finished(tracing, exporter)}
    outer = spans["classifier.classify"]
    assert outer.resource.attributes["service.name"] == "classifier"
    assert outer.attributes["hemascope.backbone"] == "efficientnet_lite0"
    assert "hemascope.site" not in outer.attributes  # None values are left out
    assert outer.attributes["hemascope.status_code"] == "OK"
    assert spans["svm"].parent.span_id == outer.context.span_id
    assert spans["svm"].attributes["hemascope.status_code"] == "OK"
    assert spans["knn"].attributes["hemascope.status_code"] == "NOT_FOUND"
    assert spans["knn"].status.status_code is trace.StatusCode.ERROR
    tracing.shutdown()


def test_a_ratio_of_zero_records_no_new_trace_but_follows_a_sampled_parent() -> None:
    tracing, exporter = traced("gateway", ratio=0.0)
    with tracing.tracer.start_as_current_span("analyze") as span:
        assert not span.is_recording()
    sampled = trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(sampled)), tracing.tracer.start_as_current_span("embed"):
        assert current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    assert [s.name for s in finished(tracing, exporter)] == ["embed"]


def test_in_context_carries_the_trace_into_another_thread() -> None:
    tracing, _ = traced("gateway")
    with futures.ThreadPoolExecutor(1) as pool, tracing.tracer.start_as_current_span("analyze"):
        here = current_trace_id()
        plain = pool.submit(current_trace_id).result()
        carried = pool.submit(in_context(current_trace_id)).result()
    assert here and carried == here
    assert plain == ""


# ---------------------------------------------------------------------------------------------- propagation


def _echo_server(tracing: Tracing) -> tuple[grpc.Server, int]:
    """A server whose one method answers the trace id its handler runs in and the traceparent it got."""

    def handle(_request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        answer = {"trace_id": current_trace_id(), "traceparent": metadata.get("traceparent", "")}
        return json.dumps(answer).encode()

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Context": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=tracing.server_interceptors())
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def echo() -> Iterator[tuple[Tracing, InMemorySpanExporter, int]]:
    tracing, exporter = traced("feature")
    server, port = _echo_server(tracing)
    yield tracing, exporter, port
    server.stop(None)
    tracing.shutdown()


def _call(channel: grpc.Channel) -> dict[str, str]:
    answer: dict[str, str] = json.loads(channel.unary_unary(METHOD)(b"", timeout=10))
    return answer


def test_trace_context_travels_in_grpc_metadata(echo: tuple[Tracing, InMemorySpanExporter, int]) -> None:
    server_tracing, server_exporter, port = echo
    client_tracing, client_exporter = traced("gateway")
    channel = client_tracing.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"))
    with client_tracing.tracer.start_as_current_span("embedding"):
        trace_id = current_trace_id()
        answer = _call(channel)
    channel.close()
    version, sent_trace, sent_parent, flags = answer["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)
    assert int(flags, 16) & 1  # sampled
    assert answer["trace_id"] == trace_id  # the server's handler runs in the caller's trace
    client_spans = {s.name: s for s in finished(client_tracing, client_exporter)}
    (server_span,) = finished(server_tracing, server_exporter)
    client_call = client_spans[METHOD]
    assert client_call.parent.span_id == client_spans["embedding"].context.span_id
    assert format(client_call.context.span_id, "016x") == sent_parent
    assert server_span.parent.span_id == client_call.context.span_id
    assert server_span.resource.attributes["service.name"] == "feature"
    assert server_span.attributes["rpc.method"] == "Context"
    client_tracing.shutdown()


def test_an_untraced_client_sends_no_trace_context(echo: tuple[Tracing, InMemorySpanExporter, int]) -> None:
    _, _, port = echo
    off = setup_tracing(TracingConfig(None, "gateway"))
    channel = off.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"))
    with off.tracer.start_as_current_span("embedding"):
        answer = _call(channel)
    channel.close()
    assert answer["traceparent"] == ""


# ---------------------------------------------------------------------------------------------- logs


def test_log_records_carry_the_trace_and_span_id() -> None:
    tracing, _ = traced("gateway")
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    with tracing.tracer.start_as_current_span("analyze") as span:
        event = add_trace_context(None, "info", {"event": "x"})
    assert event["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert event["span_id"] == format(span.get_span_context().span_id, "016x")
    tracing.shutdown()


def test_configured_logging_writes_the_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    tracing, _ = traced("gateway")
    root = logging.getLogger()
    saved, saved_structlog = (root.handlers[:], root.level), structlog.get_config()
    try:
        configure_logging("INFO", json=True)
        with tracing.tracer.start_as_current_span("analyze"):
            trace_id = current_trace_id()
            structlog.get_logger("tracing-test").info("part_done", part="embedding")
            logging.getLogger("tracing-test-stdlib").warning("plain %s", "record")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.configure(**saved_structlog)
    ours = [line for line in lines if line.get("event") in ("part_done", "plain record")]
    assert len(ours) == 2
    assert all(line["trace_id"] == trace_id for line in ours)
    tracing.shutdown()


# ---------------------------------------------------------------------------------------------- export


def test_spans_reach_an_otlp_collector_at_the_configured_endpoint() -> None:
    with otlp_collector() as (collector, endpoint):
        tracing = setup_tracing(ServerSettings(tracing_endpoint=endpoint).tracing_config("detector"))
        with step(tracing.tracer, "detector.detect", model="detector-bccd"):
            trace_id = current_trace_id()
        tracing.shutdown()  # exports what is left
        (span,) = collector.taken()
    assert (span.service, span.name, span.trace_id) == ("detector", "detector.detect", trace_id)
    assert span.attributes["hemascope.model"] == "detector-bccd"
    assert span.attributes["hemascope.status_code"] == "OK"


def test_shutdown_is_idempotent_and_turns_tracing_off() -> None:
    tracing, _ = traced("gateway")
    tracing.shutdown()
    tracing.shutdown()
    assert not tracing.enabled
    assert isinstance(tracing.tracer, trace.NoOpTracer)
