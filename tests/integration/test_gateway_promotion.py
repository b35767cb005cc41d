"""Promoting a bundle through the gateway (GatewayAdminService.PromoteBundle) to the real classifier service
over mutual TLS: an admin key promotes (the classifier then serves the bundle), other callers are refused,
the classifier's refusals come back with its status, and every call is audited with the caller and bundle.

The classifier runs in-process on port 0 with tiny synthetic bundles (tests.classifier_fixtures); the other
services are not started (promotion needs only the classifier)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.audit import verify
from gateway.auth import ADMIN_ROLE, add_key
from hemascope.client import AsyncHemascopeClient, FailedPrecondition, HemascopeClient, PermissionDenied
from hemascope.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    analysis_pb2,
    analysis_pb2_grpc,
)
from tests.gateway_helpers import start_offline_gateway
from tests.grpc_helpers import error_reason, rpc_error
from tests.promotion_helpers import WAIT, make_pki, serving, start_classifier, start_gateway


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stack(
    bundles: dict[str, Path], pki: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    classifier, classifier_port = start_classifier(bundles["v1"], pki)
    gateway, port, secrets = start_gateway(classifier_port, pki, tmp_path_factory.mktemp("gateway"))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {"channel": channel, "classifier_port": classifier_port, "gateway_port": port} | secrets
    channel.close()
    gateway.stop(0)
    classifier.stop(0)


def promote(channel: grpc.Channel, key: str, path: str) -> admin_pb2.PromoteBundleResponse:
    stub = admin_pb2_grpc.GatewayAdminServiceStub(channel)
    reply: admin_pb2.PromoteBundleResponse = stub.PromoteBundle(
        admin_pb2.PromoteBundleRequest(path=path), timeout=WAIT, metadata=(("x-api-key", key),)
    )
    return reply


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_admin_key_promotes_a_bundle(stack: dict[str, Any], bundles: dict[str, Path], pki: Any) -> None:
    before = serving(stack["classifier_port"], pki)
    target = "v2" if before == "v1" else "v1"
    reply = promote(stack["channel"], stack["admin"], str(bundles[target]))
    assert (reply.bundle_version, reply.previous_version, reply.model_count) == (target, before, 5)
    assert serving(stack["classifier_port"], pki) == target
    analysis = analysis_pb2_grpc.AnalysisServiceStub(stack["channel"])
    caps = analysis.GetCapabilities(
        analysis_pb2.GetCapabilitiesRequest(), timeout=WAIT, metadata=(("x-api-key", stack["caller"]),)
    )
    assert caps.bundle_version == target  # the cached capabilities were dropped by the promotion
    record = [r for r in audit_lines(stack["audit"]) if r["rpc"] == "PromoteBundle" and r["outcome"] == "OK"]
    assert record[-1]["caller_id"] == "model-ops"
    assert record[-1]["options"] == {"path": str(bundles[target])}
    assert record[-1]["model_versions"] == {"classifier": target, "previous_classifier": before}
    assert verify(stack["audit"]).ok


def test_a_caller_without_the_admin_role_is_refused(
    stack: dict[str, Any], bundles: dict[str, Path], pki: Any
) -> None:
    before = serving(stack["classifier_port"], pki)
    other = "v2" if before == "v1" else "v1"
    error = rpc_error(lambda: promote(stack["channel"], stack["caller"], str(bundles[other])))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error) == "ADMIN_ROLE_REQUIRED"
    assert serving(stack["classifier_port"], pki) == before
    last = audit_lines(stack["audit"])[-1]
    assert (last["rpc"], last["caller_id"], last["outcome"]) == (
        "PromoteBundle",
        "lis-north",
        "PERMISSION_DENIED",
    )
    assert last["options"] == {"path": str(bundles[other])}
    unknown = rpc_error(lambda: promote(stack["channel"], "hsk_not-a-key", str(bundles[other])))
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_classifiers_refusals_keep_its_status(stack: dict[str, Any], pki: Any, tmp_path: Path) -> None:
    before = serving(stack["classifier_port"], pki)
    error = rpc_error(lambda: promote(stack["channel"], stack["admin"], str(tmp_path)))  # no manifest
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(error) == "BAD_BUNDLE"
    assert "manifest.json" in str(error.details())
    error = rpc_error(lambda: promote(stack["channel"], stack["admin"], str(tmp_path) + "\x01"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "BAD_PATH"
    assert serving(stack["classifier_port"], pki) == before
    outcomes = [r["outcome"] for r in audit_lines(stack["audit"])[-2:]]
    assert outcomes == ["FAILED_PRECONDITION", "INVALID_ARGUMENT"]


def test_a_path_the_classifier_does_not_allow_is_permission_denied(
    bundles: dict[str, Path], pki: dict[str, Any], tmp_path: Path
) -> None:
    classifier, classifier_port = start_classifier(bundles["v1"], pki, allow_reload_path=False)
    gateway, port, secrets = start_gateway(classifier_port, pki, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = rpc_error(lambda: promote(channel, secrets["admin"], str(bundles["v2"])))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert error_reason(error) == "RELOAD_PATH_REFUSED"
            assert promote(channel, secrets["admin"], "").bundle_version == "v1"  # its own bundle, reloaded
    finally:
        gateway.stop(0)
        classifier.stop(0)


def test_without_an_admin_identity_the_classifier_refuses_the_gateway(
    bundles: dict[str, Path], pki: dict[str, Any], tmp_path: Path
) -> None:
    classifier, classifier_port = start_classifier(bundles["v1"], pki)
    gateway, port, secrets = start_gateway(classifier_port, pki, tmp_path, admin_identity=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = rpc_error(lambda: promote(channel, secrets["admin"], str(bundles["v2"])))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "ADMIN_ONLY"
        assert "HEMASCOPE_GATEWAY_ADMIN_CERT_FILE" in str(error.details())
        assert serving(classifier_port, pki) == "v1"
    finally:
        gateway.stop(0)
        classifier.stop(0)


def test_the_client_promotes_sync_and_asyncio(
    stack: dict[str, Any], bundles: dict[str, Path], pki: Any
) -> None:
    port = stack["gateway_port"]
    before = serving(stack["classifier_port"], pki)
    target = "v2" if before == "v1" else "v1"
    with HemascopeClient(f"127.0.0.1:{port}", api_key=stack["admin"]) as client:
        reply = client.promote_bundle(str(bundles[target]))
    assert (reply.bundle_version, reply.previous_version) == (target, before)
    caller = HemascopeClient(f"127.0.0.1:{port}", api_key=stack["caller"])
    with caller, pytest.raises(PermissionDenied) as refused:
        caller.promote_bundle(str(bundles[before]))
    assert refused.value.reason == "ADMIN_ROLE_REQUIRED"

    async def back() -> tuple[str, str]:
        async with AsyncHemascopeClient(f"127.0.0.1:{port}", api_key=stack["admin"]) as client:
            with pytest.raises(FailedPrecondition) as bad:
                await client.promote_bundle(str(bundles[before].parent))  # not a bundle
            assert bad.value.reason == "BAD_BUNDLE"
            answer = await client.promote_bundle(str(bundles[before]))
            return answer.bundle_version, answer.previous_version

    assert asyncio.run(back()) == (before, target)
    assert serving(stack["classifier_port"], pki) == before


@pytest.mark.parametrize(("address", "reason"), [("dead", "SERVICE_UNAVAILABLE"), ("", "NOT_RUNNING")])
def test_a_classifier_that_is_down_or_absent_is_unavailable(
    tmp_path: Path, address: str, reason: str
) -> None:
    keys, audit = tmp_path / "keys.jsonl", tmp_path / "audit.jsonl"
    admin = add_key(keys, "model-ops", ADMIN_ROLE)
    overrides = {"classifier_address": ""} if not address else {}  # else: a port nothing listens on
    server, port = start_offline_gateway(api_keys_file=keys, audit_log=audit, **overrides)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            error = rpc_error(lambda: promote(channel, admin, "/bundles/next"))
    finally:
        server.stop(0)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error_reason(error) == reason
    last = audit_lines(audit)[-1]
    assert (last["rpc"], last["caller_id"], last["outcome"]) == ("PromoteBundle", "model-ops", "UNAVAILABLE")


def test_without_api_keys_nobody_is_an_admin(tmp_path: Path) -> None:
    server, port = start_offline_gateway(audit_log=tmp_path / "audit.jsonl")  # authentication off
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = admin_pb2_grpc.GatewayAdminServiceStub(channel)
            request = admin_pb2.PromoteBundleRequest(path="/bundles/next")
            error = rpc_error(lambda: stub.PromoteBundle(request, timeout=WAIT))
    finally:
        server.stop(0)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_reason(error) == "ADMIN_ROLE_REQUIRED"
    last = audit_lines(tmp_path / "audit.jsonl")[-1]
    assert (last["caller_id"], last["outcome"]) == ("anonymous", "PERMISSION_DENIED")
