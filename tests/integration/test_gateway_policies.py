"""The gateway's data plane through a real gateway (gateway.server.create_server) on 127.0.0.1 port 0, with
the downstream services down (every answer here is the gateway's own): KServe calls and refused calls in
the audit trail, failing closed on an unwritable audit log, an audit path that cannot be opened, limits per
connection for anonymous callers, idle streams ended, and long or NUL-holding caller strings refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.audit import verify
from gateway.auth import add_key
from gateway.kserve import encode_bytes_tensor
from hemascope.cli import main
from hemascope.errors import ConfigurationError
from hemascope.server import ManagedServer
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc
from tests.conftest import encode
from tests.gateway_helpers import start_offline_gateway
from tests.grpc_helpers import error_reason, rpc_error

WAIT = 20.0


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[tuple[ManagedServer, int]]:
    server, port = start_offline_gateway(**getattr(request, "param", {}))
    try:
        yield server, port
    finally:
        server.stop(0)


def own_connection(port: int) -> grpc.Channel:
    """A channel with its own TCP connection (gRPC would otherwise share one between channels)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cell_png() -> bytes:
    return encode(np.full((32, 32, 3), 200, np.uint8))


def infer_request(images: list[bytes]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="hemascope")
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(encode_bytes_tensor(images))
    return request


def test_kserve_calls_and_refused_calls_are_audited_with_the_peer(tmp_path: Path) -> None:
    audit, keys = tmp_path / "audit.jsonl", tmp_path / "keys.jsonl"
    key = add_key(keys, "lis-north")
    server, port = start_offline_gateway(audit_log=audit, api_keys_file=keys)
    try:
        with own_connection(port) as channel:
            kserve = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            metadata = [("x-api-key", key)]
            kserve.ServerLive(service_pb2.ServerLiveRequest(), metadata=metadata, timeout=WAIT)
            error = rpc_error(lambda: kserve.ModelInfer(infer_request([cell_png()]), metadata=metadata))
            assert error.code() == grpc.StatusCode.UNAVAILABLE  # the classifier is down
            refused = rpc_error(lambda: kserve.ModelInfer(infer_request([cell_png()]), timeout=WAIT))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0)
    records = lines(audit)
    assert [(r["rpc"], r["outcome"], r["caller_id"]) for r in records] == [
        ("ServerLive", "OK", "lis-north"),
        ("ModelInfer", "UNAVAILABLE", "lis-north"),
        ("ModelInfer", "UNAUTHENTICATED", ""),
    ]
    assert all(r["peer"].startswith("ipv4:127.0.0.1:") for r in records)
    assert verify(audit).ok


def test_an_unwritable_audit_log_fails_closed_and_reports_not_serving() -> None:
    server, port = start_offline_gateway(audit_log=Path("/dev/full"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
            request = analysis_pb2.AnalyzeRequest()
            request.image.data = cell_png()
            first = rpc_error(lambda: stub.Analyze(request, timeout=WAIT))
            assert first.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(first) == "AUDIT_UNAVAILABLE"
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            kserve = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            refused = rpc_error(lambda: kserve.ServerLive(service_pb2.ServerLiveRequest(), timeout=WAIT))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE  # every protocol is refused
    finally:
        server.stop(0)


def test_an_audit_path_that_cannot_be_opened_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with pytest.raises(ConfigurationError, match="cannot open the audit log") as info:
        start_offline_gateway(audit_log=blocker / "audit.jsonl")
    assert "--audit-log" in info.value.message
    result = CliRunner().invoke(
        main, ["serve", "gateway", "--port", "0", "--audit-log", str(blocker / "audit.jsonl")]
    )
    assert result.exit_code == 2
    assert "cannot open the audit log" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("gateway", [{"max_streams_per_caller": 1}], indirect=True)
def test_anonymous_callers_get_their_own_stream_limit_per_connection(
    gateway: tuple[ManagedServer, int],
) -> None:
    _, port = gateway
    hold = threading.Event()

    def one_then_silent() -> Iterator[analysis_pb2.AnalyzeStreamRequest]:
        first = analysis_pb2.AnalyzeStreamRequest(request_id="1")
        first.request.image.data = b"not an image"
        yield first
        hold.wait(WAIT)

    with own_connection(port) as greedy, own_connection(port) as other:
        held = analysis_pb2_grpc.AnalysisServiceStub(greedy).AnalyzeStream(one_then_silent(), timeout=WAIT)
        try:
            assert next(held).error.reason  # answered: the stream holds its connection's one slot
            second = analysis_pb2_grpc.AnalysisServiceStub(greedy).AnalyzeStream(iter([]), timeout=WAIT)
            error = rpc_error(lambda: list(second))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # its own connection's limit
            # Another client is not locked out by the first one's idle stream.
            other_stub = analysis_pb2_grpc.AnalysisServiceStub(other)
            assert list(other_stub.AnalyzeStream(iter([]), timeout=WAIT)) == []
        finally:
            hold.set()
            held.cancel()


@pytest.mark.parametrize("gateway", [{"stream_idle_timeout_s": 0.3}], indirect=True)
def test_an_idle_stream_is_ended(gateway: tuple[ManagedServer, int]) -> None:
    _, port = gateway
    hold = threading.Event()

    def silent() -> Iterator[analysis_pb2.AnalyzeStreamRequest]:
        hold.wait(WAIT)
        yield from ()

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = analysis_pb2_grpc.AnalysisServiceStub(channel).AnalyzeStream(silent(), timeout=WAIT)
            error = rpc_error(lambda: list(call))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert error_reason(error) == "STREAM_IDLE"
    finally:
        hold.set()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("explain_class", "x" * 5000),
        ("explain_model", "logistic\x00regression"),
        ("explain_method", "y" * 200),
    ],
)
def test_long_or_nul_holding_option_strings_are_invalid_arguments(
    gateway: tuple[ManagedServer, int], field: str, value: str
) -> None:
    _, port = gateway
    request = analysis_pb2.AnalyzeRequest()
    request.image.data = cell_png()
    request.options.explain = True
    setattr(request.options, field, value)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
        error = rpc_error(lambda: stub.Analyze(request, timeout=WAIT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "BAD_STRING"
    assert len(error.details() or "") < 200
