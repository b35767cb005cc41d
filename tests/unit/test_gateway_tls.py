"""TLS settings: which credentials each combination of files gives, and clear errors for wrong ones.

Handshakes (TLS, mTLS, refused clients) are in tests/integration/test_gateway_security.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway.tls import channel_credentials, client_credentials, server_credentials
from hemascope.errors import ConfigurationError
from tests.tls_helpers import Issued, make_ca


@dataclass
class Settings:
    """The attributes GatewaySettings has for TLS (duck-typed, as the gateway passes them)."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    downstream_ca_file: Path | None = None
    downstream_cert_file: Path | None = None
    downstream_key_file: Path | None = None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Issued, Issued]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "test-ca")
    return ca.cert, ca.issue(folder, "gateway", server=True), ca.issue(folder, "lis-north", server=False)


def test_no_files_means_plaintext() -> None:
    assert server_credentials(Settings()) is None
    assert channel_credentials(Settings()) is None


def test_server_tls_and_mtls(pki: tuple[Path, Issued, Issued]) -> None:
    ca, server, _ = pki
    assert isinstance(server_credentials(Settings(server.cert, server.key)), grpc.ServerCredentials)
    mtls = Settings(server.cert, server.key, tls_client_ca_file=ca)
    assert isinstance(server_credentials(mtls), grpc.ServerCredentials)


def test_downstream_and_client_credentials(pki: tuple[Path, Issued, Issued]) -> None:
    ca, _, client = pki
    for settings in (
        Settings(downstream_ca_file=ca),
        Settings(downstream_ca_file=ca, downstream_cert_file=client.cert, downstream_key_file=client.key),
    ):
        assert isinstance(channel_credentials(settings), grpc.ChannelCredentials)
    assert isinstance(client_credentials(ca), grpc.ChannelCredentials)
    assert isinstance(client_credentials(ca, client.cert, client.key), grpc.ChannelCredentials)


def test_cert_without_key_and_key_without_cert_are_refused(pki: tuple[Path, Issued, Issued]) -> None:
    ca, server, client = pki
    with pytest.raises(ConfigurationError, match="TLS_CERT_FILE is set but HEMASCOPE_GATEWAY_TLS_KEY_FILE"):
        server_credentials(Settings(tls_cert_file=server.cert))
    with pytest.raises(ConfigurationError, match="TLS_KEY_FILE is set but HEMASCOPE_GATEWAY_TLS_CERT_FILE"):
        server_credentials(Settings(tls_key_file=server.key))
    with pytest.raises(ConfigurationError, match="DOWNSTREAM_CERT_FILE is set but"):
        channel_credentials(Settings(downstream_ca_file=ca, downstream_cert_file=client.cert))
    with pytest.raises(ConfigurationError, match="client key"):
        client_credentials(ca, cert=client.cert)


def test_client_ca_without_server_certificate_is_refused(pki: tuple[Path, Issued, Issued]) -> None:
    with pytest.raises(ConfigurationError, match="TLS_CLIENT_CA_FILE needs"):
        server_credentials(Settings(tls_client_ca_file=pki[0]))


def test_missing_and_non_pem_files_name_the_setting(tmp_path: Path, pki: tuple[Path, Issued, Issued]) -> None:
    ca, server, _ = pki
    with pytest.raises(ConfigurationError, match="TLS_KEY_FILE: cannot read"):
        server_credentials(Settings(server.cert, tmp_path / "absent.key"))
    garbage = tmp_path / "ca.pem"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(ConfigurationError, match=r"TLS_CLIENT_CA_FILE: .* holds no PEM block"):
        server_credentials(Settings(server.cert, server.key, tls_client_ca_file=garbage))
    with pytest.raises(ConfigurationError, match="DOWNSTREAM_CA_FILE: cannot read"):
        channel_credentials(Settings(downstream_ca_file=tmp_path / "absent.pem"))
    assert ca.exists()
