"""TLS and mutual TLS from PEM files named in the settings.

Caller <-> gateway: :func:`server_credentials` (TLS when a certificate and key are set; mutual TLS,
client certificates *required* and checked against ``tls_client_ca_file``, when that is set). Gateway ->
services: :func:`channel_credentials` (the services' CA, plus the gateway's own certificate and key when the
services require client certificates). Clients (CLI, tests): :func:`client_credentials`.

Every file is read once, at start-up; a missing or unreadable file, a file that holds no PEM block, or a
certificate without its key (or the reverse) is a :class:`~hemascope.errors.ConfigurationError` that names
the setting, never a handshake failure later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import grpc

from hemascope.errors import ConfigurationError

ENV_PREFIX = "HEMASCOPE_GATEWAY_"


class ServerTlsSettings(Protocol):
    """The TLS attributes of GatewaySettings that :func:`server_credentials` reads."""

    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...
    @property
    def tls_client_ca_file(self) -> Path | None: ...


class DownstreamTlsSettings(Protocol):
    """The TLS attributes of GatewaySettings that :func:`channel_credentials` reads."""

    @property
    def downstream_ca_file(self) -> Path | None: ...
    @property
    def downstream_cert_file(self) -> Path | None: ...
    @property
    def downstream_key_file(self) -> Path | None: ...


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of a PEM file; ConfigurationError naming ``setting`` when it is unreadable or not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{setting}: cannot read {path}: {exc.strerror or exc}", field=setting.lower()
        ) from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{setting}: {path} holds no PEM block", field=setting.lower())
    return data


def _pair(
    cert: Path | None, key: Path | None, cert_setting: str, key_setting: str
) -> tuple[bytes, bytes] | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (cert_setting, key_setting) if cert is not None else (key_setting, cert_setting)
        raise ConfigurationError(f"{given} is set but {missing} is not: set both or neither")
    return read_pem(cert, cert_setting), read_pem(key, key_setting)


def server_credentials(settings: ServerTlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for the gateway's port: None (plaintext), TLS, or mTLS requiring client certificates."""
    pair = _pair(
        settings.tls_cert_file,
        settings.tls_key_file,
        f"{ENV_PREFIX}TLS_CERT_FILE",
        f"{ENV_PREFIX}TLS_KEY_FILE",
    )
    client_ca = settings.tls_client_ca_file
    if pair is None:
        if client_ca is not None:
            raise ConfigurationError(
                f"{ENV_PREFIX}TLS_CLIENT_CA_FILE needs {ENV_PREFIX}TLS_CERT_FILE and "
                f"{ENV_PREFIX}TLS_KEY_FILE (mutual TLS is TLS with client certificates)"
            )
        return None
    cert, key = pair
    if client_ca is None:
        return grpc.ssl_server_credentials([(key, cert)])
    ca = read_pem(client_ca, f"{ENV_PREFIX}TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(settings: DownstreamTlsSettings) -> grpc.ChannelCredentials | None:
    """Credentials for gateway -> service channels; None when no downstream TLS file is set (plaintext)."""
    ca, cert, key = settings.downstream_ca_file, settings.downstream_cert_file, settings.downstream_key_file
    if ca is None and cert is None and key is None:
        return None
    pair = _pair(cert, key, f"{ENV_PREFIX}DOWNSTREAM_CERT_FILE", f"{ENV_PREFIX}DOWNSTREAM_KEY_FILE")
    root = read_pem(ca, f"{ENV_PREFIX}DOWNSTREAM_CA_FILE") if ca is not None else None
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=pair[1], certificate_chain=pair[0]
    )


def client_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Credentials for a client of the gateway: trust ``ca`` (None: the system's roots), and present
    ``cert``/``key`` when the gateway requires client certificates."""
    root = read_pem(ca, "CA file") if ca is not None else None
    pair = _pair(cert, key, "client certificate", "client key")
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=pair[1], certificate_chain=pair[0]
    )
