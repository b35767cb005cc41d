"""Prometheus metrics, defined once for the process, plus the /metrics HTTP endpoint.

Per-RPC counts and latency come from the server interceptor; queue depth, in-flight work and batch sizes
come from the core classes (the detector's queue depth is what Kubernetes autoscaling reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_REQUESTS = Counter(
    "hemascope_rpc_requests_total", "RPCs handled, by method and status code.", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "hemascope_rpc_latency_seconds", "RPC handling time, by method.", ["method"], buckets=_LATENCY_BUCKETS
)
RPC_IN_FLIGHT = Gauge("hemascope_rpc_in_flight", "RPCs being handled now, by method.", ["method"])

QUEUE_DEPTH = Gauge("hemascope_queue_depth", "Items waiting in a micro-batching queue.", ["queue"])
BATCH_SIZE = Histogram(
    "hemascope_batch_size",
    "Items per executed micro-batch.",
    ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_LATENCY = Histogram(
    "hemascope_batch_seconds", "Time to run one micro-batch.", ["queue"], buckets=_LATENCY_BUCKETS
)
REJECTED = Counter("hemascope_rejected_total", "Items refused because a queue was full.", ["queue"])
EXPIRED = Counter("hemascope_expired_total", "Queued items dropped because their deadline passed.", ["queue"])
INPUT_CHECKS = Counter(
    "hemascope_input_checks_total",
    "Images checked for being one centred white cell, by verdict (hemascope.imaging.inputcheck.InputKind).",
    ["kind"],
)


@dataclass
class MetricsEndpoint:
    """A running /metrics HTTP server."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_metrics_endpoint(host: str, port: int) -> MetricsEndpoint:
    """Serves the process's metrics on ``host:port`` (0 picks a free port)."""
    server, thread = start_http_server(port, addr=host)
    return MetricsEndpoint(server=server, thread=thread)
