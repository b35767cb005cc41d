"""``hemascope health ADDRESS`` against real gRPC servers on 127.0.0.1 port 0: plaintext and TLS.

The container images' HEALTHCHECK and the gateway's Kubernetes exec probes run this command, so its exit
code is the contract: 0 only for SERVING.
"""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hemascope.cli import main

SERVER_NAME = "gateway.hemascope.test"


class Server:
    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType, service: str = "") -> None:
        self.health.set(service, status)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.server.stop(0)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["health", *args])
    return result.exit_code, result.output


def test_serving_exits_0(server: Server) -> None:
    server.set(health_pb2.HealthCheckResponse.SERVING)
    code, output = run(server.address)
    assert code == 0, output
    assert "SERVING" in output


def test_not_serving_exits_1(server: Server) -> None:
    server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    code, output = run(server.address)
    assert code == 1
    assert "NOT_SERVING" in output


def test_named_service(server: Server) -> None:
    server.set(health_pb2.HealthCheckResponse.SERVING)
    server.set(health_pb2.HealthCheckResponse.NOT_SERVING, "hemascope.v1.FeatureService")
    assert run(server.address)[0] == 0
    assert run(server.address, "--service", "hemascope.v1.FeatureService")[0] == 1
    code, output = run(server.address, "--service", "no.such.Service")
    assert code == 1
    assert "NOT_FOUND" in output


def test_nothing_listening_exits_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the check: nothing listens there
    code, output = run(f"127.0.0.1:{port}", "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in output or "DEADLINE_EXCEEDED" in output


def test_quiet_prints_nothing_when_serving(server: Server) -> None:
    server.set(health_pb2.HealthCheckResponse.SERVING)
    assert run(server.address, "--quiet") == (0, "")


def test_cert_without_key_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    code, output = run(server.address, "--ca", str(pem), "--cert", str(pem))
    assert code == 2
    assert "--cert and --key go together" in output


def test_as_module_without_the_cli(server: Server) -> None:
    """``python -m hemascope.commands.health`` is the light form a probe may use."""
    server.set(health_pb2.HealthCheckResponse.SERVING)
    ok = subprocess.run(
        [sys.executable, "-m", "hemascope.commands.health", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = subprocess.run(
        [sys.executable, "-m", "hemascope.commands.health", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server = Server(credentials)
    try:
        server.set(health_pb2.HealthCheckResponse.SERVING)
        code, output = run(server.address, "--ca", str(cert), "--server-name", SERVER_NAME)
        assert code == 0, output
        # Plaintext to a TLS port, or a certificate for another name, is not healthy.
        assert run(server.address, "--timeout", "2")[0] == 1
        wrong = run(server.address, "--ca", str(cert), "--server-name", "other.test", "--timeout", "2")
        assert wrong[0] == 1
        missing = run(server.address, "--ca", str(tmp_path / "absent.pem"))
        assert missing[0] == 1
        assert "cannot read a TLS file" in missing[1]
    finally:
        server.server.stop(0)
