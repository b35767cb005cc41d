"""A development certificate authority: one CA and the certificates every process needs for mutual TLS.

``hemascope tls dev-ca DIR`` writes (keys with mode 0600):

* ``ca.pem`` / ``ca-key.pem``: the CA (ECDSA P-256, valid ``days`` days);
* ``<name>.pem`` / ``<name>-key.pem`` for the gateway and each service: server *and* client certificates
  (the gateway presents its own to the services), named ``localhost``, ``127.0.0.1``, ``<name>`` and
  ``<name>.hemascope.svc[.cluster.local]``;
* ``admin.pem`` / ``admin-key.pem``: a client certificate named :data:`ADMIN_SUBJECT`, the identity that
  administrative RPCs (ReloadBundle) answer;
* ``client.pem`` / ``client-key.pem``: a client certificate for ``hemascope analyze --cert/--key``.

For development and tests only: a production deployment takes its certificates from its own CA
(cert-manager, the hospital's PKI).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("gateway", "feature", "classifier", "detector", "explain")
ADMIN_SUBJECT = "hemascope-admin"
CLIENT_SUBJECT = "hemascope-dev-client"


@dataclass(frozen=True)
class DevCa:
    """Where :func:`make_dev_ca` put everything."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}-key.pem"


def make_dev_ca(folder: Path, days: int = 30) -> DevCa:
    """Writes a CA and the certificates listed in the module docstring into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = folder / f"{name}-key.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    def builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hemascope development CA")])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca_cert = (
        builder("hemascope development CA", ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca_cert, ca_key)

    def leaf(name: str, subject: str, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        made = builder(subject, ca_name, key)
        made = made.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        made = made.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if server:
            names: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName(name),
                x509.DNSName(f"{name}.hemascope.svc"),
                x509.DNSName(f"{name}.hemascope.svc.cluster.local"),
            ]
            made = made.add_extension(x509.SubjectAlternativeName(names), critical=False)
        write(name, made.sign(ca_key, hashes.SHA256()), key)

    for service in SERVICES:
        leaf(service, service, server=True)
    leaf("admin", ADMIN_SUBJECT, server=False)
    leaf("client", CLIENT_SUBJECT, server=False)
    return DevCa(folder)
