"""``hemascope.client`` against a real gateway with mutual TLS and API keys (certificates made here).

The downstream services are not started (their address refuses connections): what is checked is the
client's side (TLS options, the API key header, exceptions), with calls the gateway answers itself:
GetCapabilities with the services down, and an unreadable image refused before any downstream call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.auth import add_key
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.client import (
    AsyncHemascopeClient,
    HemascopeClient,
    InvalidImage,
    ServiceUnavailable,
    TlsConfig,
    Unauthenticated,
)
from tests.gateway_helpers import closed_port
from tests.tls_helpers import make_ca

NOT_AN_IMAGE = b"GIF89a not a supported image"


@dataclass
class SecureGateway:
    address: str
    key: str
    tls: TlsConfig
    rogue: TlsConfig


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureGateway]:
    folder = tmp_path_factory.mktemp("client-pki")
    ca, rogue_ca = make_ca(folder, "hospital-ca"), make_ca(folder, "rogue-ca")
    server_cert = ca.issue(folder, "gateway", server=True)
    client_cert = ca.issue(folder, "lis-north", server=False)
    rogue_cert = rogue_ca.issue(folder, "intruder", server=False)
    keys = folder / "keys.jsonl"
    key = add_key(keys, "lis-north")
    dead = closed_port()
    settings = GatewaySettings(
        port=0,
        metrics_port=None,
        log_json=False,
        feature_address=dead,
        classifier_address=dead,
        detector_address=dead,
        explain_address=dead,
        health_timeout_s=0.5,
        retries=0,
        api_keys_file=keys,
        tls_cert_file=server_cert.cert,
        tls_key_file=server_cert.key,
        tls_client_ca_file=ca.cert,
    )
    server, port = create_server(settings)
    server.wait_ready(30)
    yield SecureGateway(
        f"127.0.0.1:{port}",
        key,
        TlsConfig(ca=ca.cert, cert=client_cert.cert, key=client_cert.key),
        TlsConfig(ca=ca.cert, cert=rogue_cert.cert, key=rogue_cert.key),
    )
    server.stop(0)


def test_mtls_and_api_key(gateway: SecureGateway) -> None:
    with HemascopeClient(gateway.address, api_key=gateway.key, tls=gateway.tls, timeout=10) as client:
        client.wait_ready(10)
        caps = client.capabilities()
        assert caps.max_stream_in_flight >= 1
        assert not any(state.serving for state in caps.services)
        with pytest.raises(InvalidImage) as info:
            client.analyze(NOT_AN_IMAGE)
        assert info.value.reason == "UNSUPPORTED_FORMAT"


def test_missing_or_wrong_key_is_unauthenticated(gateway: SecureGateway) -> None:
    for key in (None, "hsk_not-a-key"):
        with HemascopeClient(gateway.address, api_key=key, tls=gateway.tls, timeout=10) as client:
            with pytest.raises(Unauthenticated) as info:
                client.capabilities()
            assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
            results = client.analyze_many([NOT_AN_IMAGE])
            with pytest.raises(Unauthenticated):
                next(results)


def test_a_certificate_from_another_ca_is_refused(gateway: SecureGateway) -> None:
    with (
        HemascopeClient(gateway.address, api_key=gateway.key, tls=gateway.rogue, timeout=5) as client,
        pytest.raises(ServiceUnavailable),
    ):
        client.capabilities()
    with (
        HemascopeClient(gateway.address, api_key=gateway.key, timeout=5) as plaintext,
        pytest.raises(ServiceUnavailable),
    ):
        plaintext.capabilities()


def test_tls_config_needs_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both cert and key"):
        TlsConfig(cert=tmp_path / "client.crt").credentials()


def test_async_client_over_mtls(gateway: SecureGateway) -> None:
    async def run() -> tuple[int, str]:
        async with AsyncHemascopeClient(
            gateway.address, api_key=gateway.key, tls=gateway.tls, timeout=10
        ) as client:
            caps = await client.capabilities()
            results = [result async for result in client.analyze_many([NOT_AN_IMAGE])]
            assert results[0].error is not None
            return caps.max_stream_in_flight, results[0].error.reason

    in_flight, reason = asyncio.run(run())
    assert in_flight >= 1
    assert reason == "UNSUPPORTED_FORMAT"


def test_an_unreadable_input_file_is_raised_as_itself(gateway: SecureGateway, tmp_path: Path) -> None:
    with HemascopeClient(gateway.address, api_key=gateway.key, tls=gateway.tls, timeout=10) as client:
        with pytest.raises(FileNotFoundError):
            list(client.analyze_many([NOT_AN_IMAGE, tmp_path / "missing.jpg"]))
        assert client.capabilities().max_stream_in_flight >= 1  # the client still works
