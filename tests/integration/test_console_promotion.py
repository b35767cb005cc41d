"""The console's "Promote to serving" for a finished training job's bundle, over Starlette's TestClient in
front of the real gateway and classifier (mutual TLS, tests.promotion_helpers): an admin's confirmed
promotion goes through the gateway and is audited, viewers and reviewers are refused (403), a missing or
wrong confirmation (or CSRF token) does nothing, and a console admin whose gateway key lacks the gateway's
admin role sees the gateway's refusal, audited. The training job is stored through the job store and its
bundle folder holds a real (synthetic) bundle; sessions are made in the console's session store (the login
through the gateway is tested in test_console.py)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from console.app import create_app
from console.sessions import COOKIE_NAME
from console.settings import ConsoleSettings
from console.users import User
from hemascope.errors import ConfigurationError
from tests.promotion_helpers import make_pki, promotion_stack, serving, start_classifier, start_gateway
from tests.tls_helpers import make_ca


@pytest.fixture(scope="module")
def stack(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with promotion_stack(bundles["v1"], tmp_path_factory.mktemp("promotion")) as made:
        yield made


def trained_console(address: str, bundle: Path, folder: Path, **settings: Any) -> Starlette:
    """The console in ``folder`` with one succeeded training job (id 1) whose bundle folder holds a copy
    of ``bundle``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = ConsoleSettings(
        gateway_address=address,
        users_file=folder / "users.jsonl",
        database_url=f"sqlite:///{folder / 'console.db'}",
        jobs_dir=folder / "jobs",
        **settings,
    )
    application = create_app(config)
    store = application.state.console.jobs.store
    job_id = store.create("train", "ann", {"dataset": "lab"}, [sys.executable, "-c", "pass"])
    assert store.claim_next().id == job_id and store.finish(job_id, "succeeded", 0)
    shutil.copytree(bundle, config.jobs_dir / str(job_id) / "bundle")
    return application


@pytest.fixture
def app(stack: dict[str, Any], bundles: dict[str, Path], tmp_path: Path) -> Starlette:
    """The console with one succeeded training job (id 1) whose bundle folder holds the bundle that the
    classifier does not serve now."""
    other = "v2" if serving(stack["classifier_port"], stack["pki"]) == "v1" else "v1"
    return trained_console(stack["address"], bundles[other], tmp_path)


def log_in(client: TestClient, app: Starlette, name: str, role: str, key: str) -> str:
    sessions = app.state.console.sessions
    session = sessions.new(User(name, role), api_key=key)
    client.cookies.set(COOKIE_NAME, sessions.cookie_value(session))
    return str(session.csrf_token)


def audit_rows(app: Starlette) -> list[Any]:
    return [r for r in app.state.console.jobs.store.audit_log(50) if r.action.startswith("bundle_")]


def test_an_admins_confirmed_promotion_goes_through_the_gateway_and_is_audited(
    app: Starlette, stack: dict[str, Any]
) -> None:
    before = serving(stack["classifier_port"], stack["pki"])
    with TestClient(app, follow_redirects=False) as client:
        csrf = log_in(client, app, "ann", "admin", stack["admin"])
        page = client.get("/jobs/1")
        assert 'data-testid="promote-link"' in page.text and "/jobs/1/promote" in page.text
        confirm = client.get("/jobs/1/promote")
        assert confirm.status_code == 200 and 'data-testid="promote-form"' in confirm.text
        assert "Type <strong>job-1</strong> to confirm" in confirm.text
        done = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
    assert done.status_code == 200, done.text
    after = serving(stack["classifier_port"], stack["pki"])
    assert after != before
    assert 'data-testid="promote-outcome"' in done.text and f"<code>{after}</code>" in done.text
    [row] = audit_rows(app)
    assert (row.actor, row.action, row.job_id) == ("ann", "bundle_promoted", 1)
    assert f"bundle {after} now serving (was {before}" in row.detail


def test_viewers_and_reviewers_are_refused(app: Starlette, stack: dict[str, Any]) -> None:
    before = serving(stack["classifier_port"], stack["pki"])
    with TestClient(app, follow_redirects=False) as client:
        for role in ("viewer", "reviewer"):
            csrf = log_in(client, app, role, role, stack["caller"])
            assert client.get("/jobs/1/promote").status_code == 403
            sent = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
            assert sent.status_code == 403
    assert serving(stack["classifier_port"], stack["pki"]) == before
    assert audit_rows(app) == []


@pytest.mark.parametrize(
    "form",
    [{}, {"confirm_name": ""}, {"confirm_name": "job-2"}, {"confirm_name": "yes"}, {"csrf": "wrong"}],
    ids=["nothing", "empty", "another-job", "yes", "bad-csrf"],
)
def test_without_the_confirmation_nothing_happens(
    app: Starlette, stack: dict[str, Any], form: dict[str, str]
) -> None:
    before = serving(stack["classifier_port"], stack["pki"])
    with TestClient(app, follow_redirects=False) as client:
        csrf = log_in(client, app, "ann", "admin", stack["admin"])
        data = {"csrf_token": csrf} | form
        if "csrf" in form:
            data = {"csrf_token": "forged", "confirm_name": "job-1"}
        sent = client.post("/jobs/1/promote", data=data)
    assert sent.status_code == (403 if "csrf" in form else 400)
    if "csrf" not in form:
        assert 'data-testid="promote-error"' in sent.text and "nothing was promoted" in sent.text
    assert serving(stack["classifier_port"], stack["pki"]) == before
    assert audit_rows(app) == []


def test_a_console_admin_without_the_gateways_admin_role_sees_the_refusal(
    app: Starlette, stack: dict[str, Any]
) -> None:
    before = serving(stack["classifier_port"], stack["pki"])
    with TestClient(app, follow_redirects=False) as client:
        csrf = log_in(client, app, "pat", "admin", stack["caller"])
        sent = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
    assert sent.status_code == 403
    assert 'data-testid="promote-refused"' in sent.text and "ADMIN_ROLE_REQUIRED" in sent.text
    assert serving(stack["classifier_port"], stack["pki"]) == before
    [row] = audit_rows(app)
    assert (row.actor, row.action, row.job_id) == ("pat", "bundle_promotion_refused", 1)
    assert "PERMISSION_DENIED (ADMIN_ROLE_REQUIRED)" in row.detail


def test_only_a_succeeded_training_job_offers_a_bundle(app: Starlette, stack: dict[str, Any]) -> None:
    store = app.state.console.jobs.store
    queued = store.create("evaluate", "ann", {"bundle": "job-1"}, [sys.executable, "-c", "pass"])
    with TestClient(app, follow_redirects=False) as client:
        csrf = log_in(client, app, "ann", "admin", stack["admin"])
        assert 'data-testid="promote-link"' not in client.get(f"/jobs/{queued}").text
        assert client.get(f"/jobs/{queued}/promote").status_code == 404
        sent = client.post(f"/jobs/{queued}/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
        assert sent.status_code == 404
    assert audit_rows(app) == []


def test_a_bundle_the_classifier_cannot_load_is_shown_refused_and_audited(
    app: Starlette, stack: dict[str, Any]
) -> None:
    before = serving(stack["classifier_port"], stack["pki"])
    manifest = app.state.console.settings.jobs_dir / "1" / "bundle" / "manifest.json"
    manifest.write_text('{"bundle_version": "tampered"}')
    with TestClient(app, follow_redirects=False) as client:
        csrf = log_in(client, app, "ann", "admin", stack["admin"])
        sent = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
    assert sent.status_code == 409
    assert 'data-testid="promote-refused"' in sent.text and "FAILED_PRECONDITION" in sent.text
    assert serving(stack["classifier_port"], stack["pki"]) == before
    [row] = audit_rows(app)
    assert (row.actor, row.action) == ("ann", "bundle_promotion_refused")
    assert "FAILED_PRECONDITION (BAD_BUNDLE)" in row.detail


def test_through_a_gateway_that_requires_client_certificates_the_console_presents_its_own(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    """A gateway with mutual TLS admits the console's connections by its client certificate
    (GATEWAY_CERT_FILE, GATEWAY_KEY_FILE); the promotion is still authorised by the admin's key. Without
    the certificate the gateway cannot be reached, and the page says so."""
    pki = make_pki(tmp_path / "services")
    front = make_ca(tmp_path, "front-ca")
    gateway_cert = front.issue(tmp_path, "gateway", server=True)
    console_cert = front.issue(tmp_path, "console", server=False)
    classifier, classifier_port = start_classifier(bundles["v1"], pki)
    gateway, port, secrets = start_gateway(
        classifier_port,
        pki,
        tmp_path / "gateway",
        tls_cert_file=gateway_cert.cert,
        tls_key_file=gateway_cert.key,
        tls_client_ca_file=front.cert,
    )
    tls = {"gateway_ca_file": front.cert}
    mutual = tls | {"gateway_cert_file": console_cert.cert, "gateway_key_file": console_cert.key}
    try:
        without = trained_console(f"127.0.0.1:{port}", bundles["v2"], tmp_path / "plain", **tls)
        with TestClient(without, follow_redirects=False) as client:
            csrf = log_in(client, without, "ann", "admin", secrets["admin"])
            sent = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
        assert sent.status_code == 503 and "UNAVAILABLE" in sent.text
        assert serving(classifier_port, pki) == "v1"
        app = trained_console(f"127.0.0.1:{port}", bundles["v2"], tmp_path / "mutual", **mutual)
        with TestClient(app, follow_redirects=False) as client:
            csrf = log_in(client, app, "ann", "admin", secrets["admin"])
            done = client.post("/jobs/1/promote", data={"csrf_token": csrf, "confirm_name": "job-1"})
        assert done.status_code == 200, done.text
        assert serving(classifier_port, pki) == "v2"
    finally:
        gateway.stop(0)
        classifier.stop(0)
    with pytest.raises(ConfigurationError, match="GATEWAY_KEY_FILE"):
        trained_console("127.0.0.1:1", bundles["v2"], tmp_path / "half", gateway_cert_file=console_cert.cert)
