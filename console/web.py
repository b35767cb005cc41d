"""What every page handler shares: the application's parts, the logged-in person, role and CSRF checks,
security headers and template rendering."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.analysis import BatchRunner, ClientFactory
from console.cells import is_white_cell
from console.explain import CapabilitiesCache
from console.jobs import JobQueue
from console.sessions import COOKIE_NAME, Session, SessionStore
from console.settings import ConsoleSettings
from console.store import ResultStore
from console.users import UserDirectory, role_allows

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Console:
    """The application's parts, reachable from every handler as ``request.app.state.console``."""

    settings: ConsoleSettings
    store: ResultStore
    users: UserDirectory
    sessions: SessionStore
    runner: BatchRunner
    client_factory: ClientFactory
    templates: Jinja2Templates
    jobs: JobQueue
    capabilities: CapabilitiesCache = field(default_factory=CapabilitiesCache)
    """The explain choices the gateway offers each key, kept a short while."""


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def make_templates(directory: str) -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(directory), autoescape=select_autoescape(default=True), auto_reload=False
    )
    env.filters["pct"] = lambda value: max(0, min(100, round(float(value or 0) * 100)))
    env.filters["tojson_attr"] = json.dumps
    env.tests["white_cell"] = is_white_cell
    return Jinja2Templates(env=env)


class LoginRequired(Exception):
    """No logged-in session: pages redirect to the login form, fragments answer 401."""


def session_of(request: Request) -> Session | None:
    return console_of(request).sessions.from_cookie(request.cookies.get(COOKIE_NAME))


def require(request: Request, role: str = "viewer") -> Session:
    """The logged-in session if its role includes ``role``; LoginRequired or 403 otherwise."""
    session = session_of(request)
    if session is None or session.user is None:
        raise LoginRequired
    if not role_allows(session.user.role, role):
        raise HTTPException(403, f"this needs the {role} role; you are logged in as {session.user.role}")
    return session


def check_csrf(request: Request, session: Session, form: FormData | None) -> None:
    """403 unless the form field or the htmx header carries this session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER) or (str(form.get(CSRF_FIELD) or "") if form is not None else "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise HTTPException(403, "the form has expired or did not come from this console; reload the page")


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    session = session_of(request)
    base = {"session": session, "user": session.user if session else None}
    return console_of(request).templates.TemplateResponse(
        request, name, base | context, status_code=status_code
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def set_session_cookie(response: Response, request: Request, session: Session) -> None:
    console = console_of(request)
    response.set_cookie(
        COOKIE_NAME,
        console.sessions.cookie_value(session),
        max_age=console.settings.session_max_age_s,
        httponly=True,
        secure=console.settings.cookie_secure,
        samesite="strict",
        path="/",
    )


def role_check(role: str) -> Callable[[Request], bool]:
    def allowed(request: Request) -> bool:
        session = session_of(request)
        return bool(session and session.user and role_allows(session.user.role, role))

    return allowed


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and the other protective headers to every response; nothing
    but static files may be cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
