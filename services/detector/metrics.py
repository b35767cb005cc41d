"""The detector's own Prometheus metrics (per-RPC metrics come from the shared interceptor; queue depth
and batch sizes from the kernel's micro-batcher, under the queue name :data:`QUEUE_NAME`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

QUEUE_NAME = "detector"

IN_FLIGHT = Gauge(
    "hemascope_detector_in_flight",
    "Detect and DetectBatch calls being handled now (an autoscaling signal, with "
    'hemascope_queue_depth{queue="detector"}).',
)
DETECTIONS = Counter("hemascope_detector_detections_total", "Boxes returned, by class.", ["class_name"])
