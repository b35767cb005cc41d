"""StreamLimiter (open streams per caller) and check_batch_size."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from gateway.limits import (
    REASON_BATCH_TOO_LARGE,
    REASON_EMPTY_BATCH,
    REASON_TOO_MANY_STREAMS,
    StreamLimiter,
    check_batch_size,
)
from hemascope.errors import InvalidArgument, ResourceExhausted


def test_each_caller_gets_its_own_slots() -> None:
    limiter = StreamLimiter(2)
    with limiter.acquire("lab-a"), limiter.acquire("lab-a"):
        with pytest.raises(ResourceExhausted) as info, limiter.acquire("lab-a"):
            pass
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.reason == REASON_TOO_MANY_STREAMS
        assert "at most 2" in info.value.message
        with limiter.acquire("lab-b"):  # another caller is not affected
            assert limiter.open_streams("lab-b") == 1
        assert limiter.open_streams("lab-a") == 2
    assert limiter.open_streams("lab-a") == 0


def test_a_slot_is_released_when_the_stream_fails() -> None:
    limiter = StreamLimiter(1)
    with pytest.raises(RuntimeError), limiter.acquire("lab"):
        raise RuntimeError("stream broke")
    with limiter.acquire("lab"):
        assert limiter.open_streams("lab") == 1


def test_a_refused_acquire_takes_no_slot() -> None:
    limiter = StreamLimiter(1)
    with limiter.acquire("lab"):
        for _ in range(3):
            with pytest.raises(ResourceExhausted), limiter.acquire("lab"):
                pass
    assert limiter.open_streams("lab") == 0


def test_zero_means_no_limit_and_negative_is_refused() -> None:
    limiter = StreamLimiter(0)
    with limiter.acquire("lab"), limiter.acquire("lab"), limiter.acquire("lab"):
        assert limiter.open_streams("lab") == 3
    with pytest.raises(ValueError, match=">= 0"):
        StreamLimiter(-1)


def test_concurrent_acquires_never_exceed_the_limit() -> None:
    limiter, limit = StreamLimiter(3), 3
    peak, granted, refused = [0], [0], [0]
    lock, start = threading.Lock(), threading.Barrier(16)
    release = threading.Event()

    def work() -> None:
        start.wait()
        try:
            with limiter.acquire("lab"):
                with lock:
                    granted[0] += 1
                    peak[0] = max(peak[0], limiter.open_streams("lab"))
                release.wait(5)
        except ResourceExhausted:
            with lock:
                refused[0] += 1

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    while True:
        with lock:
            if granted[0] + refused[0] == 16 or (granted[0] == limit and refused[0] == 16 - limit):
                break
        time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join()
    assert peak[0] <= limit
    assert granted[0] == limit
    assert refused[0] == 16 - limit
    assert limiter.open_streams("lab") == 0


def test_batch_size() -> None:
    check_batch_size(1, 4)
    check_batch_size(4, 4)
    check_batch_size(1000, 0)
    with pytest.raises(InvalidArgument) as info:
        check_batch_size(5, 4, field="inputs")
    assert (info.value.reason, info.value.field) == (REASON_BATCH_TOO_LARGE, "inputs")
    assert "split" in info.value.message
    with pytest.raises(InvalidArgument) as empty:
        check_batch_size(0, 4)
    assert empty.value.reason == REASON_EMPTY_BATCH
