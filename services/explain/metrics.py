"""The explain service's own Prometheus metrics (per-RPC metrics come from the shared interceptor)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CAM_SECONDS = Histogram(
    "hemascope_explain_cam_seconds",
    "Time to compute one explanation (preprocessing, backbone and CAM method), by model and method.",
    ["model", "method"],
    buckets=_BUCKETS,
)
IN_FLIGHT = Gauge("hemascope_explain_in_flight", "Explanations being computed now.")
WAITING = Gauge("hemascope_explain_waiting", "Explanations waiting for a free slot.")
REJECTED = Counter(
    "hemascope_explain_rejected_total", "Explanations refused because every slot and queue place was taken."
)
CACHE_LOOKUPS = Counter(
    "hemascope_explain_cache_lookups_total",
    "Explanation cache lookups, by backend and outcome (hit, miss, error).",
    ["backend", "outcome"],
)
