"""The per-downstream circuit breaker, with the clock injected."""

from __future__ import annotations

import pytest

from gateway.breaker import BreakerState, CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


def test_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    changes: list[tuple[str, BreakerState]] = []
    breaker = CircuitBreaker("detector", 3, 10.0, clock, lambda name, state: changes.append((name, state)))
    failing(breaker, 2)
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    failing(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    failing(breaker, 1)
    assert breaker.state is BreakerState.OPEN and breaker.is_open
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.reason == "CIRCUIT_OPEN"
    assert info.value.code.name == "UNAVAILABLE"
    assert changes == [("detector", BreakerState.OPEN)]


def test_half_open_lets_one_trial_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker("feature", 1, 5.0, clock)
    failing(breaker, 1)
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    breaker.before_call()


def test_failed_trial_reopens_for_another_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker("explain", 2, 5.0, clock)
    failing(breaker, 2)
    clock.now += 5.0
    breaker.before_call()
    breaker.record_failure()  # one failure in half-open reopens at once
    assert breaker.state is BreakerState.OPEN
    clock.now += 4.0
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 1.0
    breaker.before_call()


def test_neutral_outcome_frees_the_trial_without_a_verdict() -> None:
    clock = Clock()
    breaker = CircuitBreaker("classifier", 1, 1.0, clock)
    failing(breaker, 1)
    clock.now += 1.0
    breaker.before_call()
    breaker.record_neutral()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # another trial may run
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker("x", 0, 1.0)
    with pytest.raises(ValueError, match="reset_s"):
        CircuitBreaker("x", 1, 0.0)
