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

from hemascope import tls as kernel_tls
from hemascope.tls import ServerTlsSettings, pem_pair, read_pem

ENV_PREFIX = "HEMASCOPE_GATEWAY_"


class DownstreamTlsSettings(Protocol):
    """The TLS attributes of GatewaySettings that :func:`channel_credentials` reads."""

    @property
    def downstream_ca_file(self) -> Path | None: ...
    @property
    def downstream_cert_file(self) -> Path | None: ...
    @property
    def downstream_key_file(self) -> Path | None: ...


def server_credentials(settings: ServerTlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for the gateway's port: None (plaintext), TLS, or mTLS requiring client certificates."""
    return kernel_tls.server_credentials(settings, ENV_PREFIX)


def channel_credentials(settings: DownstreamTlsSettings) -> grpc.ChannelCredentials | None:
    """Credentials for gateway -> service channels; None when no downstream TLS file is set (plaintext)."""
    ca, cert, key = settings.downstream_ca_file, settings.downstream_cert_file, settings.downstream_key_file
    if ca is None and cert is None and key is None:
        return None
    pair = pem_pair(cert, key, f"{ENV_PREFIX}DOWNSTREAM_CERT_FILE", f"{ENV_PREFIX}DOWNSTREAM_KEY_FILE")
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
    pair = pem_pair(cert, key, "client certificate", "client key")
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=pair[1], certificate_chain=pair[0]
    )
