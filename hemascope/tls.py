"""TLS and mutual TLS for every server, from PEM files named in its settings.

:func:`server_credentials` gives a server's port: None (plaintext), TLS (``tls_cert_file`` and
``tls_key_file``), or mutual TLS (``tls_client_ca_file`` too: callers must present a certificate that CA
signed). :func:`peer_common_name` reads a verified caller's certificate name, which :mod:`hemascope.admin`
checks for administrative RPCs.

Every file is read once, at start-up; a missing or unreadable file, a file that holds no PEM block, or a
certificate without its key (or the reverse) is a :class:`~hemascope.errors.ConfigurationError` naming the
setting, never a handshake failure later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import grpc

from hemascope.errors import ConfigurationError


class ServerTlsSettings(Protocol):
    """The TLS attributes of a server's settings."""

    @property
    def tls_cert_file(self) -> Path | None: ...
    @property
    def tls_key_file(self) -> Path | None: ...
    @property
    def tls_client_ca_file(self) -> Path | None: ...


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


def pem_pair(
    cert: Path | None, key: Path | None, cert_setting: str, key_setting: str
) -> tuple[bytes, bytes] | None:
    """(certificate chain, key) PEM bytes, None when neither is set; ConfigurationError for only one."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (cert_setting, key_setting) if cert is not None else (key_setting, cert_setting)
        raise ConfigurationError(f"{given} is set but {missing} is not: set both or neither")
    return read_pem(cert, cert_setting), read_pem(key, key_setting)


def server_credentials(settings: ServerTlsSettings, env_prefix: str) -> grpc.ServerCredentials | None:
    """Credentials for a server's port: None (plaintext), TLS, or mTLS requiring client certificates.
    ``env_prefix`` (e.g. ``HEMASCOPE_CLASSIFIER_``) names the settings in error messages."""
    pair = pem_pair(
        settings.tls_cert_file,
        settings.tls_key_file,
        f"{env_prefix}TLS_CERT_FILE",
        f"{env_prefix}TLS_KEY_FILE",
    )
    client_ca = settings.tls_client_ca_file
    if pair is None:
        if client_ca is not None:
            raise ConfigurationError(
                f"{env_prefix}TLS_CLIENT_CA_FILE needs {env_prefix}TLS_CERT_FILE and "
                f"{env_prefix}TLS_KEY_FILE (mutual TLS is TLS with client certificates)"
            )
        return None
    cert, key = pair
    if client_ca is None:
        return grpc.ssl_server_credentials([(key, cert)])
    ca = read_pem(client_ca, f"{env_prefix}TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def peer_common_name(auth_context: Mapping[str, Any]) -> str | None:
    """The common name of the caller's verified client certificate (mutual TLS), or None."""
    names = auth_context.get("x509_common_name") or ()
    if not names:
        return None
    first = names[0]
    name = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    return name or None
