"""Server-side sessions. The cookie holds only a random session id signed with the console's secret
(itsdangerous, with a timestamp so old cookies expire); the gateway API key a person logged in with stays in
this process's memory and never reaches the browser. Each session has its own CSRF token."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from itsdangerous import BadSignature, TimestampSigner

from console.users import User

COOKIE_NAME = "hemascope_console"
ANONYMOUS_MAX_AGE_S = 3600
"""How long a login form stays valid."""
MAX_ANONYMOUS = 10_000
"""Anonymous sessions kept at most (the oldest go first), so unauthenticated requests cannot fill memory."""


@dataclass
class Session:
    """A session: anonymous (before login, holding only the login form's CSRF token) or a logged-in user."""

    session_id: str
    csrf_token: str
    created: float
    user: User | None = None
    api_key: str | None = field(default=None, repr=False)


class SessionStore:
    """Sessions in memory (one console process), ending ``max_age_s`` after they start."""

    def __init__(self, secret: bytes, max_age_s: int, clock: Callable[[], float] = time.time) -> None:
        self._signer = TimestampSigner(secret, salt="hemascope-console-session")
        self._max_age_s = max_age_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: User | None = None, api_key: str | None = None) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock(), user, api_key)
        with self._lock:
            self._expire()
            if user is None:
                anonymous = [key for key, s in self._sessions.items() if s.user is None]
                for key in anonymous[: max(0, len(anonymous) - MAX_ANONYMOUS + 1)]:
                    del self._sessions[key]
            self._sessions[session.session_id] = session
        return session

    def cookie_value(self, session: Session) -> str:
        return self._signer.sign(session.session_id).decode("ascii")

    def from_cookie(self, value: str | None) -> Session | None:
        """The live session a cookie names; None for no cookie, a bad signature or an ended session."""
        if not value:
            return None
        try:
            raw = self._signer.unsign(value, max_age=self._max_age_s)
        except BadSignature:
            return None
        session_id = raw.decode("ascii") if isinstance(raw, bytes) else ""
        with self._lock:
            self._expire()
            return self._sessions.get(session_id)

    def end(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)

    def _expire(self) -> None:
        now = self._clock()
        ended = [
            key
            for key, s in self._sessions.items()
            if s.created < now - (self._max_age_s if s.user is not None else ANONYMOUS_MAX_AGE_S)
        ]
        for key in ended:
            del self._sessions[key]
