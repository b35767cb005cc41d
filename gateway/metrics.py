"""Gateway metrics (per-RPC counts and latency come from the kernel's interceptor)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gateway.breaker import BreakerState

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PART_LATENCY = Histogram(
    "hemascope_gateway_part_seconds",
    "Time one part of an analysis took (including retries), by part.",
    ["part"],
    buckets=_BUCKETS,
)
PART_FAILURES = Counter(
    "hemascope_gateway_part_failures_total",
    "Parts of analyses that failed, by part and status code.",
    ["part", "code"],
)
DOWNSTREAM_RETRIES = Counter(
    "hemascope_gateway_downstream_retries_total", "Retried downstream calls, by service.", ["service"]
)
BREAKER_STATE = Gauge(
    "hemascope_gateway_breaker_state",
    "Circuit breaker state by service: 0 closed, 1 half-open, 2 open.",
    ["service"],
)
STREAM_IN_FLIGHT = Gauge("hemascope_gateway_stream_in_flight", "AnalyzeStream requests being processed now.")


def breaker_changed(service: str, state: BreakerState) -> None:
    """CircuitBreaker ``on_change`` callback: exports the new state."""
    BREAKER_STATE.labels(service).set(int(state))
