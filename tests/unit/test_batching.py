"""Tests for hemascope.batching.MicroBatcher with real worker threads.

The batch functions block on ``threading.Event`` objects so that the tests decide exactly when the worker is
busy and what is queued behind it; nothing depends on how fast the machine is. Every batcher gets a unique
name so that its Prometheus series belong to this test alone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from hemascope.batching import MicroBatcher
from hemascope.errors import DeadlineExceeded, ResourceExhausted, Unavailable

WAIT = 10.0  # generous upper bound for anything that should happen "at once"


class GatedFn:
    """A batch function that records every batch and blocks each call until ``release`` is set.

    ``entered`` is set as soon as the worker is inside the function, so a test knows that whatever it
    queues next waits behind this call.
    """

    def __init__(self, transform: Callable[[Sequence[object]], Sequence[object]] | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[object]] = []
        self._transform = transform or (lambda items: [f"r:{item}" for item in items])
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[object]) -> Sequence[object]:
        with self._lock:
            self.batches.append(list(items))
        self.entered.set()
        if not self.release.wait(WAIT):
            raise AssertionError("test never released the batch function")
        return self._transform(items)

    @property
    def seen(self) -> list[object]:
        return [item for batch in self.batches for item in batch]

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., MicroBatcher[object, object]]]:
    """``make_batcher(fn, **options)`` with a unique queue name; every batcher is closed afterwards."""
    made: list[tuple[MicroBatcher[object, object], GatedFn | None]] = []

    def make(
        fn: Callable[[Sequence[object]], Sequence[object]], **options: object
    ) -> MicroBatcher[object, object]:
        options.setdefault("max_wait_s", 0.0)
        batcher: MicroBatcher[object, object] = MicroBatcher(
            fn,
            name=f"test-{uuid.uuid4().hex[:10]}",
            **options,  # type: ignore[arg-type]
        )
        made.append((batcher, fn if isinstance(fn, GatedFn) else None))
        return batcher

    yield make
    for batcher, fn in made:
        if fn is not None:
            fn.release.set()
        batcher.close()


def occupy(batcher: MicroBatcher[object, object], fn: GatedFn, item: object = "first") -> Future[object]:
    """Puts ``item`` into the batch function and waits until the worker is blocked inside it."""
    future = batcher.enqueue(item)
    assert fn.entered.wait(WAIT), "worker never called the batch function"
    return future


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def sample(name: str, queue: str) -> float:
    value = REGISTRY.get_sample_value(name, {"queue": queue})
    return 0.0 if value is None else value


# ----------------------------------------------------------------------------------------------------------
# Grouping and results
# ----------------------------------------------------------------------------------------------------------


def test_concurrent_submits_are_grouped_into_one_batch(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn, max_batch_size=16)
    first = occupy(batcher, fn)

    callers = 5
    with ThreadPoolExecutor(max_workers=callers) as pool:
        futures = [pool.submit(batcher.submit, f"item-{i}") for i in range(callers)]
        wait_until(lambda: batcher.depth == callers)  # all five are queued behind the blocked call
        fn.release.set()
        results = [future.result(WAIT) for future in futures]

    assert first.result(WAIT) == "r:first"
    assert results == [f"r:item-{i}" for i in range(callers)]
    assert fn.sizes == [1, callers]
    assert sorted(fn.batches[1]) == sorted(f"item-{i}" for i in range(callers))


def test_max_batch_size_is_respected(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn, max_batch_size=3, max_queue=64)
    occupy(batcher, fn)
    futures = [batcher.enqueue(i) for i in range(7)]
    fn.release.set()

    assert [future.result(WAIT) for future in futures] == [f"r:{i}" for i in range(7)]
    assert fn.sizes == [1, 3, 3, 1]
    assert max(fn.sizes) <= 3


def test_results_go_to_the_right_caller_in_order(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn(transform=lambda items: [int(item) * 10 for item in items])  # type: ignore[call-overload]
    batcher = make_batcher(fn, max_batch_size=8)
    occupy(batcher, fn, item=-1)
    futures = {i: batcher.enqueue(i) for i in (7, 3, 9, 1, 5)}
    fn.release.set()

    assert {i: future.result(WAIT) for i, future in futures.items()} == {7: 70, 3: 30, 9: 90, 1: 10, 5: 50}
    assert fn.batches[1] == [7, 3, 9, 1, 5]  # the function sees the items in queue order


def test_single_submit_runs_without_company(make_batcher: Callable[..., MicroBatcher]) -> None:
    batcher = make_batcher(lambda items: [item * 2 for item in items], max_wait_s=0.001)
    assert batcher.submit(21, timeout=WAIT) == 42


# ----------------------------------------------------------------------------------------------------------
# Failures of the batch function
# ----------------------------------------------------------------------------------------------------------


def test_fn_error_reaches_every_caller_of_that_batch(make_batcher: Callable[..., MicroBatcher]) -> None:
    boom = ValueError("model exploded")
    calls: list[list[object]] = []

    def transform(items: Sequence[object]) -> Sequence[object]:
        calls.append(list(items))
        if "bad" in items:
            raise boom
        return [f"r:{item}" for item in items]

    fn = GatedFn(transform=transform)
    batcher = make_batcher(fn, max_batch_size=8)
    first = occupy(batcher, fn)
    doomed = [batcher.enqueue(item) for item in ("a", "bad", "c")]
    fn.release.set()

    assert first.result(WAIT) == "r:first"
    for future in doomed:
        with pytest.raises(ValueError, match="model exploded") as info:
            future.result(WAIT)
        assert info.value is boom
    assert fn.sizes == [1, 3]
    # the worker survives the failure and serves the next batch
    assert batcher.submit("after", timeout=WAIT) == "r:after"


def test_fn_error_raised_from_submit(make_batcher: Callable[..., MicroBatcher]) -> None:
    def fn(items: Sequence[object]) -> Sequence[object]:
        raise KeyError("nope")

    batcher = make_batcher(fn)
    with pytest.raises(KeyError, match="nope"):
        batcher.submit("x", timeout=WAIT)


def test_wrong_number_of_results_is_an_error(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn(transform=lambda items: [f"r:{item}" for item in items][:-1])
    batcher = make_batcher(fn, max_batch_size=8)
    occupy(batcher, fn)  # a one-item batch returns zero results: also wrong
    futures = [batcher.enqueue(item) for item in ("a", "b", "c")]
    fn.release.set()

    for future in futures:
        with pytest.raises(RuntimeError, match="2 results for 3 items"):
            future.result(WAIT)


# ----------------------------------------------------------------------------------------------------------
# Back-pressure, deadlines, metrics
# ----------------------------------------------------------------------------------------------------------


def test_full_queue_is_rejected_at_once(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn, max_queue=2)
    name = batcher.name
    occupy(batcher, fn)
    queued = [batcher.enqueue("q1"), batcher.enqueue("q2")]
    assert batcher.depth == 2
    assert sample("hemascope_queue_depth", name) == 2
    rejected_before = sample("hemascope_rejected_total", name)

    with pytest.raises(ResourceExhausted) as info:
        batcher.enqueue("overflow")
    assert info.value.reason == "QUEUE_FULL"
    # submit() must not wait for room either: the worker is still blocked, so returning at all proves it
    with pytest.raises(ResourceExhausted) as info:
        batcher.submit("overflow-2", timeout=None)
    assert info.value.reason == "QUEUE_FULL"
    assert sample("hemascope_rejected_total", name) == rejected_before + 2

    fn.release.set()
    assert [future.result(WAIT) for future in queued] == ["r:q1", "r:q2"]
    assert "overflow" not in fn.seen
    assert "overflow-2" not in fn.seen
    wait_until(lambda: sample("hemascope_queue_depth", name) == 0)


def test_queue_depth_gauge_follows_the_queue(make_batcher: Callable[..., MicroBatcher]) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn, max_batch_size=8)
    name = batcher.name
    occupy(batcher, fn)
    futures = [batcher.enqueue(i) for i in range(3)]
    assert sample("hemascope_queue_depth", name) == 3
    fn.release.set()
    for future in futures:
        future.result(WAIT)
    assert sample("hemascope_queue_depth", name) == 0


def test_submit_deadline_passing_while_queued_drops_the_item(
    make_batcher: Callable[..., MicroBatcher],
) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn)
    name = batcher.name
    occupy(batcher, fn)
    expired_before = sample("hemascope_expired_total", name)

    with pytest.raises(DeadlineExceeded):
        batcher.submit("late", timeout=0.1)  # the worker is blocked, so this can only time out

    fn.release.set()
    assert batcher.submit("after", timeout=WAIT) == "r:after"  # the worker has passed the late item by now
    assert "late" not in fn.seen
    assert fn.seen == ["first", "after"]
    assert sample("hemascope_expired_total", name) == expired_before + 1


def test_enqueued_item_whose_deadline_passes_fails_with_deadline_exceeded(
    make_batcher: Callable[..., MicroBatcher],
) -> None:
    fn = GatedFn()
    batcher = make_batcher(fn, max_batch_size=8)
    occupy(batcher, fn)
    late = batcher.enqueue("late", timeout=0.05)
    patient = batcher.enqueue("patient", timeout=WAIT)
    time.sleep(0.2)  # let the late item's deadline pass while it is queued
    fn.release.set()

    # a domain error, not a bare CancelledError (which the RPC layer would report as INTERNAL)
    with pytest.raises(DeadlineExceeded):
        late.result(WAIT)
    assert patient.result(WAIT) == "r:patient"
    assert "late" not in fn.seen


def test_enqueue_returns_a_future(make_batcher: Callable[..., MicroBatcher]) -> None:
    batcher = make_batcher(lambda items: [item + 1 for item in items])
    future = batcher.enqueue(1)
    assert isinstance(future, Future)
    assert future.result(WAIT) == 2


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(list, name="bad", max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue"):
        MicroBatcher(list, name="bad", max_queue=0)


# ----------------------------------------------------------------------------------------------------------
# Shutdown
# ----------------------------------------------------------------------------------------------------------


def test_close_refuses_new_items(make_batcher: Callable[..., MicroBatcher]) -> None:
    batcher = make_batcher(list)
    assert batcher.submit("before", timeout=WAIT) == "before"
    batcher.close()
    with pytest.raises(Unavailable):
        batcher.submit("after", timeout=WAIT)
    with pytest.raises(Unavailable):
        batcher.enqueue("after")
    batcher.close()  # idempotent


def test_close_settles_every_queued_item_and_does_not_hang(make_batcher: Callable[..., MicroBatcher]) -> None:
    """Items queued before close() are still run (the documented behaviour); none is left pending."""
    fn = GatedFn()
    batcher = make_batcher(fn, max_batch_size=2, max_queue=1000)
    first = occupy(batcher, fn)
    queued = [batcher.enqueue(i) for i in range(5)]

    closer = threading.Thread(target=batcher.close, daemon=True)
    closer.start()
    probes: list[Future[object]] = []

    def closed() -> bool:  # public API only: enqueue starts refusing once close() has begun
        try:
            probes.append(batcher.enqueue("probe"))
        except Unavailable:
            return True
        return False

    wait_until(closed)
    assert batcher.depth >= 5  # close() came while the items were still queued behind the blocked call
    fn.release.set()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() hung"

    assert first.result(0) == "r:first"
    for i, future in enumerate(queued):
        assert future.done()
        assert future.result(0) == f"r:{i}"
    for probe in probes:  # accepted before close(): settled too, never left hanging
        assert probe.result(0) == "r:probe"
    with pytest.raises(Unavailable):
        batcher.enqueue("late")
