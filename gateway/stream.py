"""Bidirectional streaming with flow control: at most ``max_in_flight`` requests of one stream at once.

A reader thread takes the next request from the caller's stream only after acquiring a slot; a slot is
given back only after that request's response has been handed to gRPC. So while ``max_in_flight`` requests
are being processed (or their responses are waiting for a slow reader), the gateway reads nothing more and
gRPC's flow control pushes back on the caller. Responses are yielded as they finish, not in request order.
A request whose id equals that of a request still in flight is answered at once by ``duplicate`` (it takes a
slot only until that answer is sent).

An idle stream (nothing in flight and no request read for ``idle_timeout_s``, by the injected clock) is
ended by raising ``idle_error()`` from the response iterator, so a caller cannot hold a stream (and its
slot of the per-caller limit) open for ever without sending anything.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from gateway import metrics
from hemascope.logs import get_logger
from hemascope.tracing import in_context

log = get_logger(__name__)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
_POLL_S = 0.1


@dataclass(frozen=True)
class _Answer(Generic[Resp]):
    response: Resp
    key: str | None  # the in-flight id to release, None for an answer to a duplicate


@dataclass(frozen=True)
class _End:
    total: int  # requests read (each gets exactly one answer)


class StreamProcessor(Generic[Req, Resp]):
    """Runs one stream's requests on a shared executor, at most ``max_in_flight`` at a time."""

    def __init__(
        self,
        executor: Executor,
        max_in_flight: int,
        key: Callable[[Req], str],
        handle: Callable[[Req], Resp],
        duplicate: Callable[[Req], Resp],
        failed: Callable[[Req, Exception], Resp],
        idle_timeout_s: float | None = None,
        idle_error: Callable[[], Exception] = lambda: TimeoutError("the stream was idle too long"),
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = _POLL_S,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._idle_timeout_s = idle_timeout_s
        self._idle_error = idle_error
        self._clock = clock
        self._poll_s = poll_s
        self._executor = executor
        self._max = max_in_flight
        self._key = key
        self._handle = handle
        self._duplicate = duplicate
        self._failed = failed

    def run(self, requests: Iterator[Req]) -> Iterator[Resp]:
        """Yields one response per request read from ``requests``; stops reading when closed."""
        return _Run(self, requests).responses()


class _Run(Generic[Req, Resp]):
    """The state of one stream: slots, in-flight ids, the answers queue and the reader thread."""

    def __init__(self, processor: StreamProcessor[Req, Resp], requests: Iterator[Req]) -> None:
        self.p = processor
        self.requests = requests
        self.slots = threading.Semaphore(processor._max)
        self.answers: queue.Queue[_Answer[Resp] | _End] = queue.Queue()
        self.stop = threading.Event()
        self.active: set[str] = set()
        self.lock = threading.Lock()
        self.read = 0
        self.last_activity = processor._clock()

    def _next_answer(self, sent: int) -> _Answer[Resp] | _End:
        """The next answer; raises the processor's idle error when the stream has been idle too long."""
        timeout = self.p._idle_timeout_s
        if timeout is None:
            return self.answers.get()
        while True:
            try:
                return self.answers.get(timeout=self.p._poll_s)
            except queue.Empty:
                with self.lock:
                    idle = self.read == sent and self.p._clock() - self.last_activity >= timeout
                if idle:
                    raise self.p._idle_error() from None

    def responses(self) -> Iterator[Resp]:
        # the reader and the workers continue the call's trace (its span is current here)
        reader = threading.Thread(target=in_context(self._read), name="stream-reader", daemon=True)
        reader.start()
        sent, total = 0, None
        try:
            while total is None or sent < total:
                item = self._next_answer(sent)
                if isinstance(item, _End):
                    total = item.total
                    continue
                if item.key is not None:
                    with self.lock:
                        self.active.discard(item.key)
                with self.lock:
                    self.last_activity = self.p._clock()
                yield item.response
                sent += 1
                self.slots.release()
        finally:
            self.stop.set()

    def _read(self) -> None:
        total = 0
        try:
            while not self.stop.is_set():
                if not self.slots.acquire(timeout=_POLL_S):
                    continue
                try:
                    request = next(self.requests)
                except StopIteration:
                    self.slots.release()
                    return
                total += 1
                with self.lock:
                    self.read = total
                    self.last_activity = self.p._clock()
                self._start(request)
        except Exception as exc:  # the caller's stream broke (e.g. cancelled): answer what was read
            log.info("stream_read_ended", error=type(exc).__name__)
        finally:
            self.answers.put(_End(total))

    def _start(self, request: Req) -> None:
        key = self.p._key(request)
        with self.lock:
            duplicate = key in self.active
            self.active.add(key)
        if duplicate:
            self.answers.put(_Answer(self.p._duplicate(request), None))
            return
        metrics.STREAM_IN_FLIGHT.inc()
        self.p._executor.submit(in_context(partial(self._work, request, key)))

    def _work(self, request: Req, key: str) -> None:
        try:
            response = self.p._handle(request)
        except Exception as exc:  # handle() maps domain errors itself; this is a bug, kept per-request
            log.exception("stream_item_failed")
            response = self.p._failed(request, exc)
        finally:
            metrics.STREAM_IN_FLIGHT.dec()
        self.answers.put(_Answer(response, key))
