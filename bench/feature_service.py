"""Feature benchmark, service side: the ``hemascope serve feature`` subprocess, Embed load and latency."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
from benchlib.cpu import CpuUsage, cpu_snapshot, cpu_usage
from benchlib.load import CALL_TIMEOUT_S, Call, CallFactory
from benchlib.service import ServerProcess, hemascope_command, open_channel, start_service
from benchlib.stats import Latency, measure_latency
from feature_model import EncodedImage, embed_requests, service_env

from hemascope.v1 import feature_pb2, feature_pb2_grpc
from services.feature.settings import FeatureSettings

MAX_LATENCY_CALLS = 2000

LatencyRun = tuple[dict[str, Latency], CpuUsage]


@contextlib.contextmanager
def run_server(
    settings: FeatureSettings, workdir: Path, redis_url: str | None = None, **env: str
) -> Iterator[ServerProcess]:
    """``hemascope serve feature`` on free ports; stderr goes to a file in ``workdir``."""
    command = [*hemascope_command(), "serve", "feature", "--port", "0", "--metrics-port", "0"]
    command += ["--backbone", settings.backbone, *(["--redis-url", redis_url] if redis_url else [])]
    log_path = workdir / f"server-{settings.backbone}-{uuid.uuid4().hex[:8]}.log"
    with start_service(command, service_env(settings, **env), log_path) as server:
        yield server


def embed_caller(requests: Sequence[feature_pb2.EmbedRequest]) -> CallFactory:
    """For the load driver: each client's stub calls ``Embed`` on ``requests`` in turn."""

    def make_call(channel: grpc.Channel) -> Call:
        stub = feature_pb2_grpc.FeatureServiceStub(channel)

        def call(position: int) -> feature_pb2.EmbedResponse:
            return stub.Embed(requests[position % len(requests)], timeout=CALL_TIMEOUT_S)

        return call

    return make_call


def embed_latency(
    stub: feature_pb2_grpc.FeatureServiceStub,
    requests: Sequence[feature_pb2.EmbedRequest],
    *,
    expect_hit: bool,
    seconds: float,
) -> Latency:
    """Sequential calls cycling over ``requests`` for ``seconds`` (each request at most once for misses)."""

    def call(index: int) -> feature_pb2.EmbedResponse:
        return stub.Embed(requests[index % len(requests)], timeout=CALL_TIMEOUT_S)

    return measure_latency(
        call,
        lambda response: response.cache_hit == expect_hit,
        limit=MAX_LATENCY_CALLS if expect_hit else len(requests),
        seconds=seconds,
    )


def bench_latency(
    server: ServerProcess, hit_images: Sequence[EncodedImage], fresh: Sequence[EncodedImage], seconds: float
) -> LatencyRun:
    """Miss latency on never-seen images, then hit latency on a few images embedded once beforehand."""
    before = cpu_snapshot(server.proc.pid)
    channel = open_channel(server.address, private=False)
    stub = feature_pb2_grpc.FeatureServiceStub(channel)
    hits = embed_requests(hit_images, skip_cache=False)
    for request in hits:  # warms the connection and fills the cache for the hit measurement
        stub.Embed(request, timeout=CALL_TIMEOUT_S)
    result = {
        "miss": embed_latency(
            stub, embed_requests(fresh, skip_cache=False), expect_hit=False, seconds=seconds
        ),
        "hit": embed_latency(stub, hits, expect_hit=True, seconds=seconds),
    }
    channel.close()
    return result, cpu_usage(before, cpu_snapshot(server.proc.pid))


def delete_redis_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def bench_redis_latency(
    settings: FeatureSettings,
    workdir: Path,
    redis_url: str,
    images: dict[str, list[EncodedImage]],
    seconds: float,
) -> LatencyRun:
    """Latency with the Redis cache, under a unique key prefix whose keys are deleted afterwards."""
    prefix = f"hemascope-bench-{uuid.uuid4().hex[:12]}:"
    try:
        with run_server(settings, workdir, redis_url, HEMASCOPE_FEATURE_CACHE_PREFIX=prefix) as server:
            return bench_latency(server, images["throughput"][:8], images["fresh"], seconds)
    finally:
        delete_redis_keys(redis_url, prefix)
