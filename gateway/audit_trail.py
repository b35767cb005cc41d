"""Failing closed on the audit trail, and recovering.

:class:`AuditTrail` wraps the gateway's :class:`~gateway.audit.AuditLog`. While the log cannot be written
(a full disk, an I/O error) nothing may go unaudited, so:

* the write that fails refuses its request (UNAVAILABLE, reason ``AUDIT_UNAVAILABLE``), is logged at ERROR
  (once per outage) and turns the trail *down*: ``on_change(False)`` (the gateway reports NOT_SERVING);
* while down, calls are refused before any work is done (:meth:`AuditTrail.ensure_writable`), except that
  at most every ``retry_s`` one attempt is made to write a ``AuditResumed`` record (it names how many calls
  were refused meanwhile); :meth:`AuditTrail.tick`, run by a background thread, makes the same attempt
  without waiting for traffic;
* when that record is written the trail is *up* again: ``on_change(True)`` (SERVING), logged at WARNING.

Time comes from an injected clock, so the retry interval is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gateway.audit import REASON, AuditLog, AuditRecord
from hemascope.errors import Unavailable
from hemascope.logs import get_logger

log = get_logger(__name__)

RESUMED_RPC = "AuditResumed"
REFUSED_MESSAGE = "the audit trail cannot be written, so no request is accepted; retry later"


class AuditTrail:
    """The audit log plus its up/down state; thread-safe."""

    def __init__(
        self,
        audit: AuditLog,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.audit = audit
        self._retry_s = retry_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._up = True
        self._next_try = 0.0
        self._refused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        """False from a failed write until a write succeeds again."""
        with self._lock:
            return self._up

    def set_on_change(self, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change

    def write(self, record: AuditRecord) -> None:
        """Appends ``record``; Unavailable (and the trail down) when it cannot be written."""
        self.ensure_writable()
        try:
            self.audit.append(record)
        except Unavailable as exc:
            self._down(exc)
            raise Unavailable(REFUSED_MESSAGE, reason=REASON) from None

    def ensure_writable(self) -> None:
        """Returns when the trail is up (trying to bring it back when a retry is due); Unavailable when it
        stays down, counting the refused call."""
        if self.up or self.try_resume():
            return
        with self._lock:
            self._refused += 1
        raise Unavailable(REFUSED_MESSAGE, reason=REASON)

    def try_resume(self) -> bool:
        """While down and a retry is due: writes an ``AuditResumed`` record; True when the trail is up."""
        with self._lock:
            if self._up:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self._retry_s
            refused = self._refused
        record = AuditRecord(
            caller_id="gateway",
            content_hash="",
            options={},
            model_versions={},
            outcome="OK",
            parts={"refused_calls": str(refused)},
            latency_ms=0.0,
            rpc=RESUMED_RPC,
        )
        try:
            self.audit.append(record)
        except Unavailable:
            return False
        with self._lock:
            self._up = True
            self._refused -= refused
        log.warning("audit_resumed", path=str(self.audit.path), refused_calls=refused)
        if self._on_change is not None:
            self._on_change(True)
        return True

    def tick(self) -> None:
        """One background check: a retry when the trail is down and one is due."""
        if not self.up:
            self.try_resume()

    def start(self, interval_s: float = 1.0) -> None:
        """Runs :meth:`tick` every ``interval_s`` seconds in a daemon thread until :meth:`close`."""

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.tick()

        self._thread = threading.Thread(target=run, name="audit-trail", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.audit.close()

    def _down(self, exc: Unavailable) -> None:
        with self._lock:
            was_up, self._up = self._up, False
            self._next_try = self._clock() + self._retry_s
        if was_up:
            log.error(
                "audit_write_failed",
                path=str(self.audit.path),
                error=exc.message,
                detail="refusing every request until the audit trail can be written again",
            )
            if self._on_change is not None:
                self._on_change(False)
