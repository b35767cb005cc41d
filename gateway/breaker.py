"""A per-downstream circuit breaker.

closed --(``failures`` consecutive failures)--> open --(``reset_s`` later)--> half-open: one trial call is
let through; its success closes the breaker, its failure opens it again for another ``reset_s``. While
open (or while the half-open trial is running) calls fail fast with UNAVAILABLE, reason CIRCUIT_OPEN, so a
dead service costs callers nothing. The clock is injected so tests control time.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from hemascope.errors import Unavailable


class BreakerState(enum.IntEnum):
    """Breaker states; the values are what the state gauge reports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(Unavailable):
    """Raised instead of calling a service whose breaker is open."""

    default_reason = "CIRCUIT_OPEN"


class CircuitBreaker:
    """Thread-safe breaker for one downstream service."""

    def __init__(
        self,
        name: str,
        failures: int,
        reset_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("failures must be >= 1 and reset_s > 0")
        self.name = name
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose reset time has passed reads HALF_OPEN)."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._reset_s:
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def is_open(self) -> bool:
        """True while calls fail fast (open, or half-open with the trial call running)."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                return self._clock() - self._opened_at < self._reset_s
            return self._state is BreakerState.HALF_OPEN and self._trial_running

    def before_call(self) -> None:
        """Admits a call, or raises :class:`CircuitOpen`. Pair every admitted call with one record_*()."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            if self._state is BreakerState.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self._reset_s:
                    raise CircuitOpen(
                        f"the {self.name} service failed {self._threshold} times in a row; calls fail fast "
                        f"for another {self._reset_s - waited:.1f} s",
                    )
                self._set(BreakerState.HALF_OPEN)
            if self._trial_running:
                raise CircuitOpen(f"the {self.name} service is being probed after failures; try again soon")
            self._trial_running = True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_running = False
            if self._state is not BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._trial_running = False
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)

    def record_neutral(self) -> None:
        """An admitted call ended in a way that says nothing about the service's health (e.g. a bad
        request, or the caller's own short deadline): frees a half-open trial slot without a verdict."""
        with self._lock:
            self._trial_running = False

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(self.name, state)
