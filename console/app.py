"""The console's ASGI application: ``create_app(settings)``."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import (
    exports,
    routes_analyse,
    routes_auth,
    routes_batch_results,
    routes_cells,
    routes_explain,
    routes_jobs,
    routes_models,
    routes_promote,
    routes_results,
    routes_site,
)
from console.analysis import BatchRunner, ClientFactory
from console.job_store import JobStore
from console.jobs import JobQueue
from console.sessions import SessionStore
from console.settings import ENV_PREFIX, ConsoleSettings
from console.store import ResultStore, make_engine
from console.users import UserDirectory
from console.web import Console, LoginRequired, SecurityHeaders, make_templates, redirect, render
from hemascope.client import AsyncHemascopeClient, TlsConfig
from hemascope.errors import ConfigurationError
from hemascope.tls import pem_pair

HERE = Path(__file__).parent
MIN_SECRET_BYTES = 32


def read_secret(path: Path | None) -> bytes:
    """The session-signing secret from ``path``, or a random one; ConfigurationError for a short one."""
    if path is None:
        return secrets.token_bytes(32)
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the console secret key file {path}: {exc}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"the console secret key file {path} must hold at least 32 bytes")
    return secret


def gateway_tls(settings: ConsoleSettings) -> TlsConfig | None:
    """How the console reaches the gateway: plaintext (no CA and no client certificate), TLS, or mutual TLS
    with its client certificate; ConfigurationError when only one of the certificate and its key is set, or
    either cannot be read."""
    cert, key = settings.gateway_cert_file, settings.gateway_key_file
    pem_pair(cert, key, f"{ENV_PREFIX}GATEWAY_CERT_FILE", f"{ENV_PREFIX}GATEWAY_KEY_FILE")  # both, readable
    if settings.gateway_ca_file is None and cert is None:
        return None
    return TlsConfig(ca=settings.gateway_ca_file, cert=cert, key=key)


def gateway_client_factory(settings: ConsoleSettings) -> ClientFactory:
    tls = gateway_tls(settings)

    def make(api_key: str) -> AsyncHemascopeClient:
        return AsyncHemascopeClient(
            settings.gateway_address, api_key=api_key, tls=tls, timeout=settings.gateway_timeout_s
        )

    return make


async def _login_required(request: Request, exc: Exception) -> Response:
    if request.headers.get("hx-request"):
        return PlainTextResponse("log in again", status_code=401, headers={"hx-redirect": "/login"})
    return redirect("/login")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.headers.get("hx-request") or exc.status_code in (304,):
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)
    return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code)


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_app(settings: ConsoleSettings, client_factory: ClientFactory | None = None) -> Starlette:
    """The console for ``settings``; ConfigurationError when its users file or secret cannot be read (a
    missing users file lets nobody in until it is made), or its gateway client certificate is half set or
    unreadable."""
    client_factory = client_factory or gateway_client_factory(settings)
    try:
        users = UserDirectory(settings.users_file)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the console users file {settings.users_file}: {exc}") from None
    engine = make_engine(settings.database_url)
    store = ResultStore(engine)
    store.fail_interrupted()
    job_store = JobStore(engine)
    job_store.fail_interrupted()
    console = Console(
        settings=settings,
        store=store,
        users=users,
        sessions=SessionStore(read_secret(settings.secret_key_file), settings.session_max_age_s),
        runner=BatchRunner(settings.streams_per_key),
        client_factory=client_factory,
        templates=make_templates(str(HERE / "templates")),
        jobs=JobQueue(job_store, settings.jobs_dir, settings.job_concurrency, settings.job_cancel_grace_s),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.jobs.start()
        yield
        await console.jobs.stop()
        await console.runner.stop()
        engine.dispose()

    app = Starlette(
        routes=[
            *routes_auth.routes,
            *routes_analyse.routes,
            *routes_results.routes,
            *routes_cells.routes,
            *routes_explain.routes,
            *routes_models.routes,
            *routes_site.routes,
            *routes_batch_results.routes,
            *routes_jobs.routes,
            *routes_promote.routes,
            *exports.routes,
            Route("/healthz", healthz, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={LoginRequired: _login_required, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.console = console
    return app
