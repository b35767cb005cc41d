"""Flow control of AnalyzeStream's processor: bounded in-flight work, duplicates, failures, early close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.stream import StreamProcessor

BOUND = 4


class Producer:
    """A fast producer: yields requests as soon as asked, counting how many were taken."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.taken = 0
        self.consumed = 0  # set by the test as it reads responses
        self.max_ahead = 0
        self.lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        for request_id in self.ids:
            with self.lock:
                self.taken += 1
                self.max_ahead = max(self.max_ahead, self.taken - self.consumed)
            yield request_id


class Handler:
    def __init__(self, delay: float = 0.005) -> None:
        self.delay = delay
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def __call__(self, request_id: str) -> str:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if request_id.startswith("boom"):
                raise RuntimeError("a bug")
            time.sleep(self.delay)
            return f"ok:{request_id}"
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(16)
    yield pool
    pool.shutdown()


def processor(executor: ThreadPoolExecutor, handler: Handler) -> StreamProcessor[str, str]:
    return StreamProcessor(
        executor,
        BOUND,
        key=lambda r: r.split("#")[0],
        handle=handler,
        duplicate=lambda r: f"dup:{r}",
        failed=lambda r, exc: f"failed:{r}:{type(exc).__name__}",
    )


def test_in_flight_never_exceeds_the_bound_with_a_fast_producer(executor: ThreadPoolExecutor) -> None:
    producer, handler = Producer([f"r{i}" for i in range(60)]), Handler()
    answers = []
    for answer in processor(executor, handler).run(iter(producer)):
        answers.append(answer)
        with producer.lock:
            producer.consumed += 1
    assert sorted(answers) == sorted(f"ok:r{i}" for i in range(60))
    assert handler.max_running <= BOUND
    assert producer.max_ahead <= BOUND  # never read more than BOUND requests ahead of the answers
    assert handler.max_running >= 2  # and it did run requests concurrently


def test_a_slow_reader_of_responses_stops_the_reading_of_requests(executor: ThreadPoolExecutor) -> None:
    producer, handler = Producer([f"r{i}" for i in range(30)]), Handler(delay=0)
    stream = processor(executor, handler).run(iter(producer))
    first = next(stream)
    time.sleep(0.3)  # the caller does not read: nothing more may be taken beyond the bound
    assert producer.taken <= BOUND + 1
    rest = list(stream)
    assert len([first, *rest]) == 30


def test_duplicate_in_flight_ids_get_their_own_answer(executor: ThreadPoolExecutor) -> None:
    handler = Handler(delay=0.2)
    answers = list(processor(executor, handler).run(iter(["a#1", "a#2", "b#1"])))
    assert sorted(answers) == ["dup:a#2", "ok:a#1", "ok:b#1"]


def test_a_failing_request_does_not_end_the_stream(executor: ThreadPoolExecutor) -> None:
    answers = list(processor(executor, Handler()).run(iter(["x", "boom", "y"])))
    assert sorted(answers) == ["failed:boom:RuntimeError", "ok:x", "ok:y"]


def test_closing_the_response_stream_stops_reading(executor: ThreadPoolExecutor) -> None:
    producer = Producer([f"r{i}" for i in range(1000)])
    stream = processor(executor, Handler(delay=0)).run(iter(producer))
    next(stream)
    stream.close()  # type: ignore[attr-defined]
    time.sleep(0.3)
    taken = producer.taken
    time.sleep(0.2)
    assert producer.taken == taken <= BOUND + 1


def test_a_broken_request_stream_answers_what_was_read(executor: ThreadPoolExecutor) -> None:
    def broken() -> Iterator[str]:
        yield "a"
        yield "b"
        raise RuntimeError("cancelled by the caller")

    assert sorted(processor(executor, Handler()).run(broken())) == ["ok:a", "ok:b"]


class Idle(Exception):
    pass


class SteppedClock:
    """A clock the test moves; ``stepped`` is set once the processor has read it after a move."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_stream_is_ended_by_the_injected_clock(executor: ThreadPoolExecutor) -> None:
    clock = SteppedClock()
    sent_first = threading.Event()
    hold = threading.Event()

    def caller() -> Iterator[str]:
        yield "one"
        sent_first.set()
        hold.wait(30)  # then sends nothing more, and never closes its side

    stream: StreamProcessor[str, str] = StreamProcessor(
        executor,
        BOUND,
        key=lambda r: r,
        handle=lambda r: f"ok:{r}",
        duplicate=lambda r: f"dup:{r}",
        failed=lambda r, _e: f"failed:{r}",
        idle_timeout_s=60.0,
        idle_error=Idle,
        clock=clock,
        poll_s=0.01,
    )
    got: list[str] = []
    first = threading.Event()

    def drain() -> None:
        try:
            for response in stream.run(caller()):
                got.append(response)
                first.set()
        except Idle:
            got.append("Idle")

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert first.wait(30) and sent_first.wait(30)
        clock.now = 59.0  # idle, but not for long enough: the stream stays open
        reader.join(0.2)
        assert reader.is_alive() and got == ["ok:one"]
        clock.now = 61.0
        reader.join(30)
        assert not reader.is_alive()
        assert got == ["ok:one", "Idle"]
    finally:
        hold.set()


def test_a_request_in_flight_is_not_idle(executor: ThreadPoolExecutor) -> None:
    clock = SteppedClock()
    release = threading.Event()

    def slow(request: str) -> str:
        clock.now = 1000.0  # far past the timeout while the request is still being handled
        release.wait(30)
        return f"ok:{request}"

    stream: StreamProcessor[str, str] = StreamProcessor(
        executor,
        BOUND,
        key=lambda r: r,
        handle=slow,
        duplicate=lambda r: r,
        failed=lambda r, _e: r,
        idle_timeout_s=1.0,
        idle_error=Idle,
        clock=clock,
        poll_s=0.01,
    )
    responses = stream.run(iter(["a"]))
    timer = threading.Timer(0.2, release.set)
    timer.start()
    try:
        assert list(responses) == ["ok:a"]
    finally:
        timer.cancel()
        release.set()
