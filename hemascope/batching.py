"""Micro-batching: concurrent requests are grouped into one model call.

Callers ``submit`` one item and block for its result. A worker thread takes the first waiting item, then
keeps collecting until ``max_batch_size`` items are in hand or ``max_wait_s`` has passed since the first,
and runs the batch function once. The queue is bounded: a full queue raises ``ResourceExhausted`` at once
rather than growing without bound. A caller's deadline is honoured: an item whose caller has given up is
dropped before it reaches the model, and the caller gets ``DeadlineExceeded``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Generic, TypeVar

from hemascope.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from hemascope.logs import get_logger
from hemascope.telemetry import BATCH_LATENCY, BATCH_SIZE, EXPIRED, QUEUE_DEPTH, REJECTED

T = TypeVar("T")
R = TypeVar("R")

log = get_logger(__name__)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: Future[R]
    deadline: float | None  # time.monotonic() value


class MicroBatcher(Generic[T, R]):
    """Groups concurrent ``submit`` calls into calls of ``fn`` on lists of up to ``max_batch_size`` items.

    ``fn`` must return one result per item, in order. If it raises, every item of that batch gets the error.
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        *,
        name: str,
        max_batch_size: int = 16,
        max_wait_s: float = 0.002,
        max_queue: int = 256,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self._fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[_Pending[T, R] | None] = queue.Queue(maxsize=max_queue)
        self._closed = threading.Event()
        self._gate = threading.Lock()  # makes "not closed, then queued" atomic against close()
        self._depth = QUEUE_DEPTH.labels(name)
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def enqueue(self, item: T, timeout: float | None = None) -> Future[R]:
        """Queues ``item`` without waiting; the future gets its result (or error).

        ``timeout`` is the caller's remaining deadline: if the item is still queued when it passes, the item
        is dropped. Raises ``ResourceExhausted`` at once when the queue is full.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pending: _Pending[T, R] = _Pending(item, Future(), deadline)
        try:
            with self._gate:
                if self._closed.is_set():
                    raise Unavailable(f"{self.name} is shutting down")
                self._queue.put_nowait(pending)
        except queue.Full:
            REJECTED.labels(self.name).inc()
            raise ResourceExhausted(
                f"{self.name} queue is full ({self._queue.maxsize} waiting); retry with backoff",
                reason="QUEUE_FULL",
            ) from None
        self._depth.set(self._queue.qsize())
        return pending.future

    def submit(self, item: T, timeout: float | None = None) -> R:
        """Queues ``item`` and waits for its result; ``timeout`` is the caller's remaining deadline."""
        future = self.enqueue(item, timeout)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(f"deadline passed while waiting for {self.name}") from None

    def close(self) -> None:
        """Stops the worker after the items already queued; later submits raise Unavailable."""
        with self._gate:
            if self._closed.is_set():
                return
            self._closed.set()
            self._queue.put(None)  # after every accepted item, so those still run
        self._thread.join(timeout=30)

    def _collect(self, first: _Pending[T, R]) -> tuple[list[_Pending[T, R]], bool]:
        batch = [first]
        stop = False
        until = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = until - time.monotonic()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                stop = True
                break
            batch.append(nxt)
        return batch, stop

    def _live(self, batch: list[_Pending[T, R]]) -> list[_Pending[T, R]]:
        now = time.monotonic()
        live = []
        for pending in batch:
            if pending.deadline is not None and pending.deadline <= now:
                # Fail the future with DeadlineExceeded rather than cancelling it: a cancelled future
                # raises CancelledError to whoever waits on it (an enqueue() caller, or submit() racing
                # with the worker), which is not a domain error and would surface as INTERNAL.
                if pending.future.set_running_or_notify_cancel():
                    expired = DeadlineExceeded(f"deadline passed while waiting for {self.name}")
                    pending.future.set_exception(expired)
                EXPIRED.labels(self.name).inc()
            elif pending.future.set_running_or_notify_cancel():
                live.append(pending)
            else:
                EXPIRED.labels(self.name).inc()
        return live

    def _execute(self, batch: list[_Pending[T, R]]) -> None:
        live = self._live(batch)
        if not live:
            return
        start = time.perf_counter()
        try:
            results = self._fn([pending.item for pending in live])
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(live)} items")
        except BaseException as exc:
            for pending in live:
                pending.future.set_exception(exc)
            return
        finally:
            BATCH_SIZE.labels(self.name).observe(len(live))
            BATCH_LATENCY.labels(self.name).observe(time.perf_counter() - start)
        for pending, result in zip(live, results, strict=True):
            pending.future.set_result(result)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            self._depth.set(self._queue.qsize())
            self._execute(batch)
            if stop:
                break
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending is not None and pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(Unavailable(f"{self.name} is shutting down"))
