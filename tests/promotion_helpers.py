"""A classifier service over mutual TLS (admin identity hemascope-admin, tiny synthetic bundles) and a gateway
in front of it holding an admin identity and API keys with and without the admin role: the stack bundle
promotion is tested on (the other services are not started)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from gateway.auth import ADMIN_ROLE, add_key
from hemascope.server import ManagedServer
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from tests.gateway_helpers import start_offline_gateway
from tests.tls_helpers import Issued, make_ca

WAIT = 30.0
ADMIN_SUBJECT = "hemascope-admin"


def make_pki(folder: Path) -> dict[str, Any]:
    """A CA with the classifier's server certificate and the gateway's and the admin's client ones."""
    ca = make_ca(folder, "services-ca")
    return {
        "ca": ca.cert,
        "classifier": ca.issue(folder, "classifier", server=True),
        "gateway": ca.issue(folder, "gateway", server=False),
        "admin": ca.issue(folder, ADMIN_SUBJECT, server=False),
    }


def start_classifier(bundle: Path, pki: dict[str, Any], **overrides: Any) -> tuple[ManagedServer, int]:
    issued: Issued = pki["classifier"]
    settings: dict[str, Any] = {
        "port": 0,
        "metrics_port": None,
        "log_json": False,
        "bundle": bundle,
        "tls_cert_file": issued.cert,
        "tls_key_file": issued.key,
        "tls_client_ca_file": pki["ca"],
        "admin_subjects": [ADMIN_SUBJECT],
        "allow_reload_path": True,
    }
    server, port = classifier_server(ClassifierSettings(**(settings | overrides)))
    server.wait_ready(WAIT)
    return server, port


def start_gateway(
    classifier_port: int, pki: dict[str, Any], folder: Path, *, admin_identity: bool = True, **front: Any
) -> tuple[ManagedServer, int, dict[str, Any]]:
    """The gateway in front of the classifier; ``front``: more of its settings (e.g. its own TLS)."""
    keys, audit = folder / "keys.jsonl", folder / "audit.jsonl"
    secrets = {"admin": add_key(keys, "model-ops", ADMIN_ROLE), "caller": add_key(keys, "lis-north")}
    gateway: Issued = pki["gateway"]
    admin: Issued = pki["admin"]
    extra = {"admin_cert_file": admin.cert, "admin_key_file": admin.key} if admin_identity else {}
    server, port = start_offline_gateway(
        classifier_address=f"127.0.0.1:{classifier_port}",
        downstream_ca_file=pki["ca"],
        downstream_cert_file=gateway.cert,
        downstream_key_file=gateway.key,
        api_keys_file=keys,
        audit_log=audit,
        capabilities_ttl_s=60.0,
        **extra,
        **front,
    )
    return server, port, secrets | {"audit": audit}


def serving(port: int, pki: dict[str, Any]) -> str:
    """The bundle version the classifier serves, asked directly (as the gateway, not an admin)."""
    issued: Issued = pki["gateway"]
    credentials = grpc.ssl_channel_credentials(
        pki["ca"].read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes()
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        return str(stub.ListModels(classifier_pb2.ListModelsRequest(), timeout=WAIT).bundle_version)


@contextmanager
def promotion_stack(bundle: Path, folder: Path) -> Iterator[dict[str, Any]]:
    """A classifier serving ``bundle`` and a gateway in front of it, both with a PKI made under ``folder``:
    the PKI, the classifier's port, the gateway's address and its keys (start_gateway's secrets)."""
    for part in ("pki", "gateway"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    pki = make_pki(folder / "pki")
    classifier, classifier_port = start_classifier(bundle, pki)
    gateway, port, secrets = start_gateway(classifier_port, pki, folder / "gateway")
    try:
        yield {"pki": pki, "classifier_port": classifier_port, "address": f"127.0.0.1:{port}"} | secrets
    finally:
        gateway.stop(0)
        classifier.stop(0)
