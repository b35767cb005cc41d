"""A gateway process whose audit file cannot grow (its RLIMIT_FSIZE lowered to the file's size, as a full
disk does) refuses calls and reports NOT_SERVING, logs the failure at ERROR, and serves again once the file
may grow, with an AuditResumed record in an intact chain. The services are not started: every call is
answered by the gateway itself."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.audit import verify
from hemascope.supervisor import free_port
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc
from tests.grpc_helpers import error_reason, rpc_error

HEMASCOPE = Path(sys.executable).with_name("hemascope")
WAIT = 120.0


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return -1
    return int(reply.status)


def wait_for(address: str, status: int) -> None:
    until = time.monotonic() + WAIT
    while health(address) != status:
        assert time.monotonic() < until, f"health never became {status}"
        time.sleep(0.1)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    audit = tmp_path / "audit.jsonl"
    port, dead = free_port(), free_port()
    env = {
        **os.environ,
        "HEMASCOPE_GATEWAY_AUDIT_RETRY_S": "0.2",
        "HEMASCOPE_GATEWAY_HEALTH_TIMEOUT_S": "0.5",
        "HEMASCOPE_GATEWAY_LOG_JSON": "true",
    }
    for service in ("FEATURE", "CLASSIFIER", "DETECTOR", "EXPLAIN"):
        env[f"HEMASCOPE_GATEWAY_{service}_ADDRESS"] = f"127.0.0.1:{dead}"
    command = [str(HEMASCOPE), "serve", "gateway", "--port", str(port), "--metrics-port", "0"]
    command += ["--audit-log", str(audit)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    address = f"127.0.0.1:{port}"
    try:
        wait_for(address, health_pb2.HealthCheckResponse.SERVING)
        yield process, address, audit
    finally:
        process.terminate()
        process.wait(60)


def test_a_full_audit_disk_fails_closed_and_the_gateway_recovers(
    gateway: tuple[subprocess.Popen[str], str, Path],
) -> None:
    process, address, audit = gateway
    with grpc.insecure_channel(address) as channel:
        stub = analysis_pb2_grpc.AnalysisServiceStub(channel)
        stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)  # audited: the file grows
        size = audit.stat().st_size
        assert size > 0
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        error = rpc_error(lambda: stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and error_reason(error) == "AUDIT_UNAVAILABLE"
        wait_for(address, health_pb2.HealthCheckResponse.NOT_SERVING)
        refused = rpc_error(lambda: stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert audit.stat().st_size == size  # nothing half-written
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(address, health_pb2.HealthCheckResponse.SERVING)
        stub.GetCapabilities(analysis_pb2.GetCapabilitiesRequest(), timeout=30)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "audit_write_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert any(e.get("event") == "audit_resumed" for e in events)
    check = verify(audit)
    assert check.ok, check.message
    rpcs = [json.loads(line)["rpc"] for line in audit.read_text().splitlines()]
    assert rpcs[0] == "GetCapabilities" and "AuditResumed" in rpcs and rpcs[-1] == "GetCapabilities"
