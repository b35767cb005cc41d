"""What ``hemascope up`` secures: the gateway's API keys, TLS and audit trail, and mutual TLS between the
gateway and the services from a CA folder (``hemascope tls dev-ca``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hemascope.supervisor import HealthTls

SERVED = ("feature", "classifier", "detector", "explain")

ADMIN_SUBJECT = "hemascope-admin"


@dataclass(frozen=True)
class ServiceTls:
    """Mutual TLS between the gateway and the services, from a CA folder (``hemascope tls dev-ca``): each
    process presents ``<name>.pem``, trusts ``ca.pem``, and the services answer administrative RPCs only for
    the CA's admin certificate, which the gateway presents for PromoteBundle when the folder holds it."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}-key.pem"

    def missing(self) -> list[Path]:
        names = ("gateway", *SERVED, "client")
        wanted = [self.ca, *(self.cert(n) for n in names), *(self.key(n) for n in names)]
        return [path for path in wanted if not path.is_file()]

    def service_environment(self, name: str) -> dict[str, str]:
        prefix = f"HEMASCOPE_{name.upper()}_"
        return {
            prefix + "TLS_CERT_FILE": str(self.cert(name).absolute()),
            prefix + "TLS_KEY_FILE": str(self.key(name).absolute()),
            prefix + "TLS_CLIENT_CA_FILE": str(self.ca.absolute()),
            prefix + "ADMIN_SUBJECTS": f'["{ADMIN_SUBJECT}"]',
        }

    def gateway_environment(self) -> dict[str, str]:
        env = {
            "HEMASCOPE_GATEWAY_DOWNSTREAM_CA_FILE": str(self.ca.absolute()),
            "HEMASCOPE_GATEWAY_DOWNSTREAM_CERT_FILE": str(self.cert("gateway").absolute()),
            "HEMASCOPE_GATEWAY_DOWNSTREAM_KEY_FILE": str(self.key("gateway").absolute()),
        }
        if self.cert("admin").is_file() and self.key("admin").is_file():
            # Only API keys with the admin role can make the gateway use it (PromoteBundle).
            env["HEMASCOPE_GATEWAY_ADMIN_CERT_FILE"] = str(self.cert("admin").absolute())
            env["HEMASCOPE_GATEWAY_ADMIN_KEY_FILE"] = str(self.key("admin").absolute())
        return env

    def health(self) -> HealthTls:
        """How ``up`` checks a service: trusting the CA, presenting the client certificate."""
        return HealthTls(self.ca, self.cert("client"), self.key("client"))


@dataclass(frozen=True)
class GatewaySecurity:
    """The gateway's API keys, TLS and audit trail (each off when None)."""

    api_keys_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    audit_log: Path | None = None
    audit_key_file: Path | None = None
    tls_ca_file: Path | None = None
    """The CA that signed tls_cert_file (None: the certificate is its own CA, i.e. self-signed)."""
    client_cert_file: Path | None = None
    """The client certificate ``up`` presents to check the gateway's health under mutual TLS."""
    client_key_file: Path | None = None

    def environment(self) -> dict[str, str]:
        """The gateway's settings (HEMASCOPE_GATEWAY_*) for what is set, as absolute paths."""
        settings = {
            "API_KEYS_FILE": self.api_keys_file,
            "TLS_CERT_FILE": self.tls_cert_file,
            "TLS_KEY_FILE": self.tls_key_file,
            "TLS_CLIENT_CA_FILE": self.tls_client_ca_file,
            "AUDIT_LOG": self.audit_log,
            "AUDIT_KEY_FILE": self.audit_key_file,
        }
        return {
            f"HEMASCOPE_GATEWAY_{key}": str(path.absolute())
            for key, path in settings.items()
            if path is not None
        }

    def health(self) -> HealthTls | None:
        """How ``up`` checks the gateway's health: None for a plaintext port."""
        if self.tls_cert_file is None:
            return None
        ca = self.tls_ca_file or self.tls_cert_file
        return HealthTls(ca, self.client_cert_file, self.client_key_file)
