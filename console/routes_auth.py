"""Login with a gateway API key, and logout."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.web import (
    check_csrf,
    console_of,
    redirect,
    render,
    session_of,
    set_session_cookie,
)
from hemascope.client import HemascopeClientError, PermissionDenied, Unauthenticated

MAX_KEY_LENGTH = 256


async def login_form(request: Request) -> Response:
    session = session_of(request)
    if session is not None and session.user is not None:
        return redirect("/")
    if session is None:
        session = console_of(request).sessions.new()
    response = render(request, "login.html", {"csrf_token": session.csrf_token, "error": ""})
    set_session_cookie(response, request, session)
    return response


async def login(request: Request) -> Response:
    console = console_of(request)
    async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
        anonymous = session_of(request)
        if anonymous is None:
            return redirect("/login")
        check_csrf(request, anonymous, form)
        key = str(form.get("api_key") or "").strip()

    def refuse(message: str, status: int) -> Response:
        response = render(
            request, "login.html", {"csrf_token": anonymous.csrf_token, "error": message}, status
        )
        return response

    user = console.users.lookup(key) if 0 < len(key) <= MAX_KEY_LENGTH else None
    if user is None:
        return refuse("This key does not open the console. Check it, or ask an administrator.", 401)
    client = console.client_factory(key)
    try:
        await client.capabilities(timeout=10.0)
    except (Unauthenticated, PermissionDenied):
        return refuse("The gateway refused this key. Ask an administrator for a valid one.", 401)
    except HemascopeClientError:
        return refuse("The gateway cannot be reached now; try again in a minute.", 503)
    finally:
        await client.close()
    console.sessions.end(anonymous)
    session = console.sessions.new(user, key)
    response = redirect("/")
    set_session_cookie(response, request, session)
    return response


async def logout(request: Request) -> Response:
    session = session_of(request)
    if session is not None:
        async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
            check_csrf(request, session, form)
        console_of(request).sessions.end(session)
    response = redirect("/login")
    response.delete_cookie("hemascope_console", path="/")
    return response


routes = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
