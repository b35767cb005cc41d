"""Security through the real gateway (gateway.server.create_server) on 127.0.0.1 port 0.

API keys (missing, wrong, right; health exempt; unary and streaming RPCs), TLS and mutual TLS with
certificates made here, per-caller stream limits, and the audit trail the calls leave behind. The
downstream services are not started (their addresses refuse connections): every call here is answered
by the gateway itself (capabilities with the services down, unreadable images refused before any
downstream call), which is what these checks are about.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from gateway.audit import verify
from gateway.auth import add_key
from gateway.tls import client_credentials
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc
from tests.gateway_helpers import WAIT, start_offline_gateway
from tests.grpc_helpers import error_reason, rpc_error
from tests.tls_helpers import Authority, Issued, make_ca

NOT_AN_IMAGE = b"\x89PNG\r\n\x1a\n this is not really a png"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(folder, "hospital-ca"), make_ca(folder, "rogue-ca")
    return {
        "ca": ca,
        "server": ca.issue(folder, "gateway", server=True),
        "client": ca.issue(folder, "lis-north", server=False),
        "rogue_ca": rogue,
        "rogue_client": rogue.issue(folder, "intruder", server=False),
    }


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A plaintext gateway requiring API keys, with an audit log and one stream per caller."""
    folder = tmp_path_factory.mktemp("keyed")
    keys = folder / "keys.jsonl"
    north, south = add_key(keys, "lis-north"), add_key(keys, "lis-south")
    audit = folder / "audit.jsonl"
    server, port = start_offline_gateway(api_keys_file=keys, audit_log=audit, max_streams_per_caller=1)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {"channel": channel, "north": north, "south": south, "audit": audit, "keys": keys}
    channel.close()
    server.stop(0)


def stub(channel: grpc.Channel) -> analysis_pb2_grpc.AnalysisServiceStub:
    return analysis_pb2_grpc.AnalysisServiceStub(channel)


def bad_image_request() -> analysis_pb2.AnalyzeRequest:
    request = analysis_pb2.AnalyzeRequest()
    request.image.data = NOT_AN_IMAGE
    request.image.image_id = "patient-MRN-0042"
    request.options.detect = True
    return request


def refused_count() -> float:
    labels = {"method": "/hemascope.v1.AnalysisService/GetCapabilities", "code": "UNAUTHENTICATED"}
    return REGISTRY.get_sample_value("hemascope_rpc_requests_total", labels) or 0.0


def test_missing_key_is_unauthenticated(keyed: dict[str, Any]) -> None:
    before = refused_count()
    error = rpc_error(lambda: stub(keyed["channel"]).GetCapabilities(analysis_pb2.GetCapabilitiesRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-key" in str(error.details())
    assert error_reason(error) == "UNAUTHENTICATED"
    assert refused_count() == before + 1  # refused calls still show in the per-RPC metrics


@pytest.mark.parametrize("which", ["random", "truncated", "other-header"])
def test_wrong_key_is_unauthenticated_without_saying_why(keyed: dict[str, Any], which: str) -> None:
    north = keyed["north"]
    metadata = {
        "random": [("x-api-key", "hsk_" + "A" * 43)],
        "truncated": [("x-api-key", north[:-2])],
        "other-header": [("authorization", f"Bearer {north}")],
    }[which]
    call = stub(keyed["channel"]).GetCapabilities
    error = rpc_error(lambda: call(analysis_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=WAIT))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "lis-north" not in str(error.details())


def test_right_key_is_served(keyed: dict[str, Any]) -> None:
    caps = stub(keyed["channel"]).GetCapabilities(
        analysis_pb2.GetCapabilitiesRequest(), metadata=[("x-api-key", keyed["north"])], timeout=WAIT
    )
    assert caps.max_streams_per_caller == 1
    assert {s.name for s in caps.services} >= {"feature", "classifier"}
    assert not any(s.serving for s in caps.services)  # nothing downstream runs in this test


def test_health_and_reflection_need_no_key(keyed: dict[str, Any]) -> None:
    health = health_pb2_grpc.HealthStub(keyed["channel"])
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_streaming_calls_are_authenticated_too(keyed: dict[str, Any]) -> None:
    item = analysis_pb2.AnalyzeStreamRequest(request_id="r1", request=bad_image_request())
    calls = stub(keyed["channel"])
    error = rpc_error(lambda: list(calls.AnalyzeStream(iter([item]), timeout=WAIT)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = list(calls.AnalyzeStream(iter([item]), metadata=[("x-api-key", keyed["south"])], timeout=WAIT))
    assert [a.request_id for a in answers] == ["r1"]
    assert answers[0].error.reason == "CORRUPT_IMAGE"


def test_streams_per_caller_are_limited(keyed: dict[str, Any]) -> None:
    calls, north = stub(keyed["channel"]), [("x-api-key", keyed["north"])]
    release = threading.Event()

    def held_open() -> Iterator[analysis_pb2.AnalyzeStreamRequest]:
        yield analysis_pb2.AnalyzeStreamRequest(request_id="first", request=bad_image_request())
        release.wait(WAIT)

    first = calls.AnalyzeStream(held_open(), metadata=north, timeout=WAIT)
    try:
        assert next(first).request_id == "first"  # the stream holds north's only slot now
        second = calls.AnalyzeStream(iter([]), metadata=north, timeout=WAIT)
        error = rpc_error(lambda: list(second))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(error) == "TOO_MANY_STREAMS"
        other = calls.AnalyzeStream(iter([]), metadata=[("x-api-key", keyed["south"])], timeout=WAIT)
        assert list(other) == []  # another caller is not limited by north's stream
    finally:
        release.set()
    assert list(first) == []
    again = calls.AnalyzeStream(iter([]), metadata=north, timeout=WAIT)
    assert list(again) == []  # the slot is free once the first stream ended


def test_calls_leave_a_verifiable_audit_trail_without_images_or_ids(keyed: dict[str, Any]) -> None:
    audit: Path = keyed["audit"]
    before = verify(audit).records
    error = rpc_error(
        lambda: stub(keyed["channel"]).Analyze(
            bad_image_request(), metadata=[("x-api-key", keyed["north"])], timeout=WAIT
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    result = verify(audit)
    assert result.ok, result.message
    assert result.records == before + 1
    text = audit.read_text()
    last = json.loads(text.splitlines()[-1])
    assert last["caller_id"] == "lis-north"
    assert last["outcome"] == "INVALID_ARGUMENT"
    assert last["rpc"] == "Analyze"
    assert last["options"] == {"detect": True}
    for secret in ("patient-MRN-0042", "this is not really a png", keyed["north"], keyed["south"]):
        assert secret not in text


def test_auth_off_means_anonymous_callers(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    server, port = start_offline_gateway(audit_log=audit)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            rpc_error(lambda: stub(channel).Analyze(bad_image_request(), timeout=WAIT))
    finally:
        server.stop(0)
    assert json.loads(audit.read_text())["caller_id"] == "anonymous"


# ----------------------------------------------------------------------
# TLS and mutual TLS
# ----------------------------------------------------------------------


def capabilities(port: int, credentials: grpc.ChannelCredentials, key: str | None = None) -> Any:
    metadata = [("x-api-key", key)] if key else None
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return stub(channel).GetCapabilities(
            analysis_pb2.GetCapabilitiesRequest(), metadata=metadata, timeout=5
        )


def test_tls_with_the_right_ca(tmp_path: Path, pki: dict[str, Any]) -> None:
    ca: Authority = pki["ca"]
    server_cert: Issued = pki["server"]
    server, port = start_offline_gateway(tls_cert_file=server_cert.cert, tls_key_file=server_cert.key)
    try:
        assert capabilities(port, client_credentials(ca.cert)).max_streams_per_caller >= 1
        rogue_ca = pki["rogue_ca"].cert  # a CA that did not sign the gateway's certificate
        error = rpc_error(lambda: capabilities(port, client_credentials(rogue_ca)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            error = rpc_error(
                lambda: stub(plain).GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=5)
            )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_mtls_requires_a_client_certificate_from_the_ca(tmp_path: Path, pki: dict[str, Any]) -> None:
    ca: Authority = pki["ca"]
    server_cert, client, rogue = pki["server"], pki["client"], pki["rogue_client"]
    keys = tmp_path / "keys.jsonl"
    key = add_key(keys, "lis-north")
    server, port = start_offline_gateway(
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=ca.cert,
        api_keys_file=keys,
    )
    try:
        good = client_credentials(ca.cert, client.cert, client.key)
        assert capabilities(port, good, key).max_streams_per_caller >= 1
        no_cert = rpc_error(lambda: capabilities(port, client_credentials(ca.cert), key))
        assert no_cert.code() == grpc.StatusCode.UNAVAILABLE
        other_ca = rpc_error(
            lambda: capabilities(port, client_credentials(ca.cert, rogue.cert, rogue.key), key)
        )
        assert other_ca.code() == grpc.StatusCode.UNAVAILABLE
        # A valid certificate does not replace the API key: both layers are checked.
        assert rpc_error(lambda: capabilities(port, good)).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(0)
