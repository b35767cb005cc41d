"""Bounded concurrency: at most ``max_concurrent`` explanations run, ``max_queue`` more wait, the rest fail.

A CAM call holds the backbone and the CAM method's buffers for tens of milliseconds (Grad-CAM) to seconds
(Ablation-CAM); letting every RPC thread run one at once would only thrash the CPU and memory. Callers
beyond the queue get RESOURCE_EXHAUSTED at once; queued callers give up when their deadline passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hemascope.errors import DeadlineExceeded, ResourceExhausted
from services.explain.metrics import IN_FLIGHT, REJECTED, WAITING


class Admission:
    """A semaphore of ``max_concurrent`` slots with at most ``max_queue`` waiters."""

    def __init__(
        self, max_concurrent: int, max_queue: int, what: str = "explanations", metrics: bool = True
    ) -> None:
        """``what`` names the work in the refusal; ``metrics`` exports the in-flight and waiting gauges."""
        if max_concurrent < 1 or max_queue < 0:
            raise ValueError("max_concurrent must be >= 1 and max_queue >= 0")
        self.what = what
        self._metrics = metrics
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    @contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[float]:
        """Holds one slot for the block; yields the seconds spent waiting for it.

        ResourceExhausted when every slot is busy and the queue is full; DeadlineExceeded when ``timeout``
        seconds pass before a slot frees.
        """
        started = time.perf_counter()
        if not self._slots.acquire(blocking=False):
            self._wait(timeout)
        waited = time.perf_counter() - started
        if self._metrics:
            IN_FLIGHT.inc()
        try:
            yield waited
        finally:
            if self._metrics:
                IN_FLIGHT.dec()
            self._slots.release()

    def _wait(self, timeout: float | None) -> None:
        with self._lock:
            if self._waiting >= self.max_queue:
                if self._metrics:
                    REJECTED.inc()
                raise ResourceExhausted(
                    f"{self.max_concurrent} {self.what} are running and {self._waiting} waiting (the "
                    "limit); retry later with backoff",
                    reason="EXPLAIN_OVERLOADED",
                )
            self._waiting += 1
            if self._metrics:
                WAITING.set(self._waiting)
        try:
            acquired = self._slots.acquire(timeout=timeout)
        finally:
            with self._lock:
                self._waiting -= 1
                if self._metrics:
                    WAITING.set(self._waiting)
        if not acquired:
            raise DeadlineExceeded("the deadline passed while waiting for a free explanation slot")
