"""Feature-service benchmark: how close does the gRPC service get to the bare ONNX Runtime session?

Run: ``.venv/bin/python bench/feature.py [--backbone efficientnet_lite0|resnet50|all] [--seconds S]
[--resnet50-checkpoint PATH] [--redis-url URL]``.

What is measured, per backbone, in one run:

1. **Raw session** -- :class:`services.feature.runtime.OnnxEmbedder` on the cached ONNX export, with the
   service's default settings (intra-op threads, providers), at batch 1, 8 and 32. The inputs are real cell
   images from ``<shared data>/bloodcells-5class``, decoded and resized to the model's input once up front
   (``spec.preprocessing.resize``), so only the model runs. ``raw_best_img_s`` is the best of the three: the
   ceiling the service could reach on this machine.
2. **Service throughput** -- the service as it is deployed: a separate process (``hemascope serve feature
   --port 0 --metrics-port 0``), with 1, 4 and 16 client threads calling ``Embed`` on real JPEGs with
   ``skip_cache=True`` (every call decodes, hashes, resizes and runs the model). An in-process server would
   share the benchmark's GIL with the client threads and understate the service. Clients use either one
   channel shared by all stubs or a private channel (own TCP connection) each; both are probed briefly at
   the highest concurrency and the faster is used. Each level warms up, then counts the calls completed
   inside a window of ``--seconds`` (work in flight at both ends of the window cancels out in steady state).
   The mean micro-batch size comes from the service's own ``/metrics``.
3. **Latency** -- one client, p50/p90 of ``Embed`` for a cache miss (images the service has never seen, so
   the full path: lookup, decode, hash, resize, model, cache write) and for a cache hit (the same image
   again), with the default in-process cache and, given ``--redis-url``, with Redis (under a unique key
   prefix whose keys are deleted afterwards).
4. **Miss breakdown** -- the per-image Python work of a miss outside the model (decode, hash, resize,
   protobuf), timed in-process on one real image, to show where the time goes besides the model.

``ratio = service_16_img_s / raw_best_img_s`` compares the service with the raw session *measured in the
same run*: absolute timings vary between runs on shared machines, the ratio much less. The client threads
run on the same machine as the service and take CPU from it; their share is printed ("client CPU"), as is
the CPU used by other processes during each phase ("foreign CPU"), which flags disturbed numbers.

PyTorch is only imported in child processes (making the random ResNet50 checkpoint, exporting to ONNX), so
the raw session runs in a process as lean as the service's. Without ``--resnet50-checkpoint`` a ResNet50
checkpoint with random weights (fixed seed) is made in a temporary directory: throughput does not depend on
the weight values. The last line printed is one JSON object (with ``--backbone all``: one key per backbone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families

from hemascope.cache import CacheKey, MemoryCache
from hemascope.data import shared_data_dir
from hemascope.imaging.decode import ImageLimits, decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.v1 import common_pb2, feature_pb2, feature_pb2_grpc
from services.feature import converters
from services.feature.backbones import BACKBONES, BackboneSpec, file_sha256, get_spec, weights_file
from services.feature.core import BackboneInfo, EmbedResult
from services.feature.onnx_export import onnx_path
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

DATASET = "bloodcells-5class"
RAW_BATCHES = (1, 8, 32)
CLIENT_COUNTS = (1, 4, 16)
CHANNEL_MODES = ("shared", "per-client")
THROUGHPUT_IMAGES = 64
BREAKDOWN_ITERATIONS = 200
MAX_LATENCY_CALLS = 2000
DISTURBED_FOREIGN_PCT = 10.0  # other processes using more of the machine than this flag the numbers
CALL_TIMEOUT_S = 120.0
SERVER_START_TIMEOUT_S = 300.0
EXPORT_TIMEOUT_S = 1800.0
SERVING_RE = re.compile(r"serving on (\S+):(\d+); metrics on port (\d+)")
RANDOM_CHECKPOINT_SCRIPT = """
import sys, torch
from torchvision.models import resnet50
torch.manual_seed(0)
torch.save(resnet50(weights=None).state_dict(), sys.argv[1])
"""


# --- command line -----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=[*BACKBONES, "all"])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each level")
    parser.add_argument("--resnet50-checkpoint", type=Path, default=None, help="default: random weights")
    parser.add_argument("--redis-url", default=None, help="also measure latency with this Redis")
    parser.add_argument(
        "--channel-mode", default="auto", choices=["auto", *CHANNEL_MODES], help="auto: probe both"
    )
    return parser.parse_args(argv)


# --- machine and CPU accounting ---------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "grpc": grpc.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    machine_busy_s: float  # every core, all processes (excludes idle, iowait and steal)
    steal_s: float
    own_s: float  # this process (the benchmark and its client threads)
    server_s: float  # the service process, if any


@dataclass(frozen=True)
class CpuUsage:
    """Shares of the machine's capacity (cores x wall time) during a phase, in percent."""

    own_pct: float
    server_pct: float
    foreign_pct: float
    steal_pct: float


_TICK = float(os.sysconf("SC_CLK_TCK"))


def _proc_stat_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot; zeros where /proc is missing."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def _pid_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (float(rest[11]) + float(rest[12])) / _TICK  # utime, stime


def cpu_snapshot(server_pid: int | None = None) -> CpuSnapshot:
    busy, steal = _proc_stat_s()
    times = os.times()
    return CpuSnapshot(time.perf_counter(), busy, steal, times.user + times.system, _pid_cpu_s(server_pid))


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    capacity = max(after.wall - before.wall, 1e-9) * len(os.sched_getaffinity(0))
    own = after.own_s - before.own_s
    server = after.server_s - before.server_s
    foreign = max(0.0, after.machine_busy_s - before.machine_busy_s - own - server)
    steal = after.steal_s - before.steal_s

    def pct(value: float) -> float:
        return round(100 * value / capacity, 1)

    return CpuUsage(pct(own), pct(server), pct(foreign), pct(steal))


# --- images -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    media_type: str
    name: str


def load_images(split: str, limit: int) -> list[EncodedImage]:
    """Up to ``limit`` real JPEGs of ``split``, taken round-robin over the classes (sorted, reproducible)."""
    root = shared_data_dir() / DATASET / split
    if not root.is_dir():
        raise SystemExit(f"dataset not found at {root}; set HEMASCOPE_DATA_DIR")
    per_class = [sorted(folder.glob("*.jpg")) for folder in sorted(root.iterdir()) if folder.is_dir()]
    ordered = [path for group in zip(*per_class, strict=False) for path in group]
    return [EncodedImage(path.read_bytes(), "image/jpeg", path.name) for path in ordered[:limit]]


def model_inputs(images: Sequence[EncodedImage], spec: BackboneSpec) -> NDArray[np.uint8]:
    """The images decoded and resized exactly as the service does, stacked ``N x S x S x 3``."""
    return np.stack(
        [spec.preprocessing.resize(decode_image(im.data, media_type=im.media_type).pixels) for im in images]
    )


def embed_requests(images: Sequence[EncodedImage], *, skip_cache: bool) -> list[feature_pb2.EmbedRequest]:
    return [
        feature_pb2.EmbedRequest(
            image=common_pb2.Image(data=im.data, media_type=im.media_type, image_id=im.name),
            skip_cache=skip_cache,
        )
        for im in images
    ]


# --- model preparation (PyTorch only in child processes) --------------------------------------------------
def hemascope_command() -> list[str]:
    beside = Path(sys.executable).with_name("hemascope")
    found = str(beside) if beside.is_file() else shutil.which("hemascope")
    if found is None:
        raise SystemExit("the `hemascope` command is not installed (pip install -e .)")
    return [found]


def random_resnet50_checkpoint(directory: Path) -> Path:
    """A torchvision ResNet50 state dict with random weights (seed 0), made in a child process."""
    path = directory / "resnet50-random-seed0.pth"
    subprocess.run([sys.executable, "-c", RANDOM_CHECKPOINT_SCRIPT, str(path)], check=True)
    return path


def service_env(settings: FeatureSettings, **extra: str) -> dict[str, str]:
    """Environment giving a child ``hemascope`` the model cache and checkpoint of ``settings``."""
    env = dict(os.environ, HEMASCOPE_FEATURE_MODEL_CACHE_DIR=str(settings.model_cache_dir))
    if settings.resnet50_checkpoint is not None:
        env["HEMASCOPE_FEATURE_RESNET50_CHECKPOINT"] = str(settings.resnet50_checkpoint)
    env.update(extra)
    return env


def ensure_export(settings: FeatureSettings) -> tuple[Path, str]:
    """The cached ONNX export (made by ``hemascope export-backbone`` if missing) and the weights hash."""
    spec = get_spec(settings.backbone)
    weights_hash = file_sha256(weights_file(spec.name, settings.resnet50_checkpoint))
    target = onnx_path(settings.model_cache_dir, spec, weights_hash)
    if not target.is_file():
        print(f"exporting {spec.name} to {target} (once per weights hash) ...", file=sys.stderr)
        command = [*hemascope_command(), "export-backbone", "--backbone", spec.name]
        subprocess.run(command, env=service_env(settings), check=True, timeout=EXPORT_TIMEOUT_S)
    return target, weights_hash


# --- 1. raw session ---------------------------------------------------------------------------------------
def raw_throughput(embedder: OnnxEmbedder, pixels: NDArray[np.uint8], batch: int, seconds: float) -> float:
    """Images per second of ``embedder.run`` on pre-stacked batches of ``batch`` real images."""
    count = max(1, len(pixels) // batch)
    batches = [
        np.ascontiguousarray(pixels[(np.arange(batch) + k * batch) % len(pixels)]) for k in range(count)
    ]
    embedder.run(batches[0])  # warm-up: first run allocates
    runs, started = 0, time.perf_counter()
    while True:
        embedder.run(batches[runs % len(batches)])
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 2:
            return runs * batch / elapsed


def bench_raw(
    path: Path, settings: FeatureSettings, pixels: NDArray[np.uint8], seconds: float
) -> tuple[dict[int, float], CpuUsage, list[str]]:
    embedder = OnnxEmbedder(
        path,
        intra_op_threads=settings.intra_op_threads,
        use_gpu=settings.use_gpu,
        allow_spinning=settings.allow_spinning,
    )
    before = cpu_snapshot()
    results = {batch: raw_throughput(embedder, pixels, batch, seconds) for batch in RAW_BATCHES}
    usage = cpu_usage(before, cpu_snapshot())
    return results, usage, list(embedder.providers)


# --- 4. miss breakdown ------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], iterations: int = BREAKDOWN_ITERATIONS) -> float:
    fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return round(1000 * float(np.median(samples)), 4)


def miss_breakdown(image: EncodedImage, spec: BackboneSpec, weights_hash: str) -> dict[str, float]:
    """Median ms per stage of a miss's Python work on one real image (the model itself is not included)."""
    request = embed_requests([image], skip_cache=False)[0]
    wire = request.SerializeToString()
    decoded = decode_image(image.data, ImageLimits(), image.media_type)
    key = CacheKey(content_hash(decoded.pixels), spec.name, weights_hash, spec.preprocessing.version)
    vector = np.zeros(spec.dimension, np.float32)
    info = BackboneInfo(spec, weights_hash, "bench", ["CPUExecutionProvider"])
    result = EmbedResult(vector, key.content_hash, False, decoded.width, decoded.height, image.name)
    response = converters.embed_response(result, info)
    cache = MemoryCache(max_entries=10)

    def cache_get_put() -> None:
        cache.get(key)
        cache.put(key, vector)

    stages: dict[str, Callable[[], object]] = {
        "request_parse": lambda: feature_pb2.EmbedRequest.FromString(wire),
        "decode_image": lambda: decode_image(image.data, ImageLimits(), image.media_type),
        "content_hash": lambda: content_hash(decoded.pixels),
        "resize": lambda: spec.preprocessing.resize(decoded.pixels),
        "memory_cache_get_put": cache_get_put,
        "response_build": lambda: converters.embed_response(result, info),
        "response_serialize": response.SerializeToString,
    }
    timings = {name: median_ms(fn) for name, fn in stages.items()}
    timings["total_python"] = round(sum(timings.values()), 3)
    return timings


# --- the service process ----------------------------------------------------------------------------------
@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log_path: Path


def _wait_serving(proc: subprocess.Popen[bytes], log_path: Path) -> re.Match[str]:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = SERVING_RE.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"the service did not report serving within {SERVER_START_TIMEOUT_S} s")


@contextlib.contextmanager
def run_server(
    settings: FeatureSettings, workdir: Path, redis_url: str | None = None, **env: str
) -> Iterator[ServerProcess]:
    """``hemascope serve feature`` on free ports; stderr goes to a file in ``workdir``."""
    command = [*hemascope_command(), "serve", "feature", "--port", "0", "--metrics-port", "0"]
    command += ["--backbone", settings.backbone, *(["--redis-url", redis_url] if redis_url else [])]
    log_path = workdir / f"server-{settings.backbone}-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            command, env=service_env(settings, **env), stdout=subprocess.DEVNULL, stderr=log_file
        )
    try:
        match = _wait_serving(proc, log_path)
        host, port, metrics_port = match.group(1), match.group(2), int(match.group(3))
        yield ServerProcess(proc, f"{host}:{port}", metrics_port, log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def batch_histogram(server: ServerProcess) -> tuple[float, float]:
    """(sum, count) of the service's micro-batch size histogram, from its /metrics."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "hemascope_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    total += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    return total, count


def open_channel(address: str, *, private: bool) -> grpc.Channel:
    """A channel; ``private`` gives it its own subchannel pool, hence its own TCP connection."""
    options = [("grpc.use_local_subchannel_pool", 1)] if private else []
    channel = grpc.insecure_channel(address, options=options)
    grpc.channel_ready_future(channel).result(timeout=30)
    return channel


# --- 2. service throughput --------------------------------------------------------------------------------
@dataclass
class Window:
    start: float
    end: float


@dataclass
class Tally:
    ok: list[int]
    errors: list[int]
    first_error: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadResult:
    clients: int
    mode: str
    img_s: float
    errors: int
    mean_batch: float | None
    cpu: CpuUsage
    first_error: str | None


def _client_loop(
    stub: feature_pb2_grpc.FeatureServiceStub,
    requests: Sequence[feature_pb2.EmbedRequest],
    index: int,
    window: Window,
    tally: Tally,
) -> None:
    """Calls Embed back to back until the window ends; counts the calls that complete inside it."""
    position = index * 7  # clients start on different images
    while time.perf_counter() < window.end:
        try:
            stub.Embed(requests[position % len(requests)], timeout=CALL_TIMEOUT_S)
            failed = False
        except grpc.RpcError as exc:
            failed = True
            if not tally.first_error:
                tally.first_error.append(f"{exc.code()}: {exc.details()}")
        done = time.perf_counter()
        if window.start <= done <= window.end:
            (tally.errors if failed else tally.ok)[index] += 1
        position += 1


def run_load(
    server: ServerProcess,
    requests: Sequence[feature_pb2.EmbedRequest],
    clients: int,
    mode: str,
    warmup: float,
    seconds: float,
) -> LoadResult:
    """``clients`` threads, each with its own stub, on one shared channel or a private channel each."""
    private = mode == "per-client"
    channels = [open_channel(server.address, private=private) for _ in range(clients if private else 1)]
    stubs = [feature_pb2_grpc.FeatureServiceStub(channels[i % len(channels)]) for i in range(clients)]
    start = time.perf_counter() + warmup
    window = Window(start, start + seconds)
    tally = Tally([0] * clients, [0] * clients)
    threads = [
        threading.Thread(target=_client_loop, args=(stubs[i], requests, i, window, tally), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window.start - time.perf_counter()))
    hist_before, cpu_before = batch_histogram(server), cpu_snapshot(server.proc.pid)
    time.sleep(max(0.0, window.end - time.perf_counter()))
    hist_after, cpu_after = batch_histogram(server), cpu_snapshot(server.proc.pid)
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    batches = hist_after[1] - hist_before[1]
    mean_batch = round((hist_after[0] - hist_before[0]) / batches, 2) if batches else None
    return LoadResult(
        clients,
        mode,
        round(sum(tally.ok) / seconds, 2),
        sum(tally.errors),
        mean_batch,
        cpu_usage(cpu_before, cpu_after),
        tally.first_error[0] if tally.first_error else None,
    )


def choose_channel_mode(
    server: ServerProcess, requests: Sequence[feature_pb2.EmbedRequest], args: argparse.Namespace
) -> tuple[str, dict[str, float]]:
    """The faster client layout at the highest concurrency, from a short probe of each."""
    if args.channel_mode != "auto":
        return str(args.channel_mode), {}
    seconds = min(args.seconds, 3.0)
    warmup = min(args.warmup, 1.0)
    probe = {
        mode: run_load(server, requests, max(CLIENT_COUNTS), mode, warmup, seconds).img_s
        for mode in CHANNEL_MODES
    }
    return max(probe, key=lambda mode: probe[mode]), probe


# --- 3. latency -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    calls: int
    unexpected: int  # hits when a miss was expected, or the reverse


def _timed_embed(
    stub: feature_pb2_grpc.FeatureServiceStub, request: feature_pb2.EmbedRequest
) -> tuple[float, bool]:
    started = time.perf_counter()
    response = stub.Embed(request, timeout=CALL_TIMEOUT_S)
    return 1000 * (time.perf_counter() - started), response.cache_hit


def measure_latency(
    stub: feature_pb2_grpc.FeatureServiceStub,
    requests: Sequence[feature_pb2.EmbedRequest],
    *,
    expect_hit: bool,
    seconds: float,
) -> Latency:
    """Sequential calls cycling over ``requests`` for ``seconds`` (each request at most once for misses)."""
    limit = MAX_LATENCY_CALLS if expect_hit else len(requests)
    samples: list[float] = []
    calls = unexpected = 0
    deadline = time.perf_counter() + seconds
    while calls < limit and (time.perf_counter() < deadline or len(samples) < 10):
        ms, hit = _timed_embed(stub, requests[calls % len(requests)])
        calls += 1
        if hit == expect_hit:
            samples.append(ms)
        else:
            unexpected += 1
    p50, p90 = np.percentile(samples, [50, 90]) if samples else (float("nan"), float("nan"))
    return Latency(round(float(p50), 2), round(float(p90), 2), len(samples), unexpected)


LatencyRun = tuple[dict[str, Latency], CpuUsage]


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
        "miss": measure_latency(
            stub, embed_requests(fresh, skip_cache=False), expect_hit=False, seconds=seconds
        ),
        "hit": measure_latency(stub, hits, expect_hit=True, seconds=seconds),
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


# --- one backbone -----------------------------------------------------------------------------------------
@dataclass
class BackboneRun:
    name: str
    onnx: Path
    providers: list[str]
    raw: dict[int, float]
    raw_cpu: CpuUsage
    channel_mode: str
    channel_probe: dict[str, float]
    service: list[LoadResult]
    latency: dict[str, dict[str, Latency]]
    latency_cpu: dict[str, CpuUsage]
    breakdown: dict[str, float]
    notes: list[str]


def backbone_settings(
    name: str, args: argparse.Namespace, workdir: Path, notes: list[str]
) -> FeatureSettings:
    checkpoint = args.resnet50_checkpoint
    if name == "resnet50" and checkpoint is None:
        checkpoint = random_resnet50_checkpoint(workdir)
        notes.append("resnet50 weights are random (seed 0): throughput does not depend on weight values")
    overrides: dict[str, Any] = {"port": 0, "metrics_port": None, "backbone": name}
    overrides["resnet50_checkpoint"] = checkpoint
    return FeatureSettings(**overrides)  # keyword dict: the other fields come from defaults and env


def bench_service(
    settings: FeatureSettings, workdir: Path, args: argparse.Namespace, images: dict[str, list[EncodedImage]]
) -> tuple[str, dict[str, float], list[LoadResult], LatencyRun]:
    requests = embed_requests(images["throughput"], skip_cache=True)
    with run_server(settings, workdir) as server:
        mode, probe = choose_channel_mode(server, requests, args)
        results = [run_load(server, requests, n, mode, args.warmup, args.seconds) for n in CLIENT_COUNTS]
        latency = bench_latency(server, images["throughput"][:8], images["fresh"], args.seconds)
    return mode, probe, results, latency


def bench_redis_latency(
    settings: FeatureSettings, workdir: Path, args: argparse.Namespace, images: dict[str, list[EncodedImage]]
) -> LatencyRun:
    prefix = f"hemascope-bench-{uuid.uuid4().hex[:12]}:"
    try:
        with run_server(settings, workdir, args.redis_url, HEMASCOPE_FEATURE_CACHE_PREFIX=prefix) as server:
            return bench_latency(server, images["throughput"][:8], images["fresh"], args.seconds)
    finally:
        delete_redis_keys(args.redis_url, prefix)


def bench_backbone(name: str, args: argparse.Namespace, workdir: Path) -> BackboneRun:
    notes: list[str] = []
    settings = backbone_settings(name, args, workdir, notes)
    spec = get_spec(name)
    path, weights_hash = ensure_export(settings)
    fresh_needed = min(1000, int(args.seconds * 200) + 20)
    images = {
        "throughput": load_images("train", THROUGHPUT_IMAGES),
        "fresh": load_images("val", fresh_needed),
    }
    raw, raw_cpu, providers = bench_raw(
        path, settings, model_inputs(images["throughput"], spec), args.seconds
    )
    breakdown = miss_breakdown(images["throughput"][0], spec, weights_hash)
    mode, probe, service, memory_latency = bench_service(settings, workdir, args, images)
    latency = {"memory": memory_latency}
    if args.redis_url:
        latency["redis"] = bench_redis_latency(settings, workdir, args, images)
    return BackboneRun(
        name=name,
        onnx=path,
        providers=providers,
        raw=raw,
        raw_cpu=raw_cpu,
        channel_mode=mode,
        channel_probe=probe,
        service=service,
        latency={cache: result for cache, (result, _) in latency.items()},
        latency_cpu={cache: usage for cache, (_, usage) in latency.items()},
        breakdown=breakdown,
        notes=notes,
    )


# --- report -----------------------------------------------------------------------------------------------
def summary(run: BackboneRun, args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    raw_best = max(run.raw.values())
    service = {result.clients: result for result in run.service}
    out: dict[str, Any] = {"backbone": run.name}
    out.update({f"raw_b{batch}_img_s": round(value, 2) for batch, value in run.raw.items()})
    out["raw_best_img_s"] = round(raw_best, 2)
    out.update({f"service_{n}_img_s": result.img_s for n, result in service.items()})
    out["ratio"] = round(service[max(CLIENT_COUNTS)].img_s / raw_best, 3)
    for cache, latencies in run.latency.items():
        prefix = "" if cache == "memory" else f"{cache}_"
        for kind, value in latencies.items():
            out[f"{prefix}{kind}_p50_ms"] = value.p50_ms
            out[f"{prefix}{kind}_p90_ms"] = value.p90_ms
    out["service_mean_batch"] = {str(n): result.mean_batch for n, result in service.items()}
    out["service_errors"] = sum(result.errors for result in run.service)
    out["channel_mode"] = run.channel_mode
    out["channel_probe_img_s"] = run.channel_probe
    out["miss_breakdown_ms"] = run.breakdown
    usages = [run.raw_cpu, *(result.cpu for result in run.service), *run.latency_cpu.values()]
    out["foreign_cpu_pct_max"] = max(usage.foreign_pct for usage in usages)
    out["disturbed"] = out["foreign_cpu_pct_max"] > DISTURBED_FOREIGN_PCT
    out["seconds"] = args.seconds
    out["warmup_s"] = args.warmup
    out["notes"] = run.notes
    out["machine"] = {**machine, "loadavg_1m_end": round(os.getloadavg()[0], 2)}
    return out


def _cpu_cells(cpu: CpuUsage) -> str:
    return f"{cpu.own_pct:>9.1f} {cpu.server_pct:>9.1f} {cpu.foreign_pct:>9.1f} {cpu.steal_pct:>7.1f}"


def _raw_lines(run: BackboneRun) -> list[str]:
    lines = [f"{'raw ONNX Runtime session':<34}{'img/s':>9} {'ms/batch':>9}"]
    lines += [f"  batch {b:<26}{v:>9.1f} {1000 * b / v:>9.1f}" for b, v in run.raw.items()]
    lines.append(f"  {'(CPU: bench/service/foreign/steal %)':<52}{_cpu_cells(run.raw_cpu)}")
    return lines


def _service_lines(run: BackboneRun, out: dict[str, Any]) -> list[str]:
    probe = ", ".join(f"{mode} {value:.1f}" for mode, value in run.channel_probe.items())
    lines = [
        f"service (subprocess), clients on channel mode '{run.channel_mode}' (probe img/s: {probe})",
        f"{'':<26}{'img/s':>8} {'mean batch':>10} {'errors':>6} {'bench%':>9} {'service%':>9} "
        f"{'foreign%':>9} {'steal%':>7}",
    ]
    for result in run.service:
        batch = f"{result.mean_batch:.2f}" if result.mean_batch is not None else "-"
        lines.append(
            f"  {result.clients:>2} client(s){'':<12}{result.img_s:>8.1f} {batch:>10} {result.errors:>6} "
            f"{_cpu_cells(result.cpu)}"
        )
        if result.first_error:
            lines.append(f"      first error: {result.first_error}")
    lines.append(
        f"ratio service_16 / raw_best = {out['ratio']:.3f}  (raw best {out['raw_best_img_s']:.1f} img/s)"
    )
    return lines


def _latency_lines(run: BackboneRun) -> list[str]:
    lines = [f"{'latency, 1 client':<34}{'p50 ms':>9} {'p90 ms':>9} {'calls':>7} {'foreign%':>9}"]
    for cache, latencies in run.latency.items():
        for kind, value in latencies.items():
            label = f"{kind} ({cache} cache)"
            wrong = f"  ({value.unexpected} unexpected {'misses' if kind == 'hit' else 'hits'})"
            lines.append(
                f"  {label:<32}{value.p50_ms:>9.2f} {value.p90_ms:>9.2f} {value.calls:>7} "
                f"{run.latency_cpu[cache].foreign_pct:>9.1f}{wrong if value.unexpected else ''}"
            )
    return lines


def _breakdown_lines(run: BackboneRun) -> list[str]:
    lines = [f"miss work besides the model, in-process, median of {BREAKDOWN_ITERATIONS} (ms/image)"]
    lines += [f"  {stage:<32}{ms:>9.4f}" for stage, ms in run.breakdown.items()]
    lines.append(f"  {'model, raw batch 1 (for scale)':<32}{1000 / run.raw[1]:>9.4f}")
    return lines


def print_table(run: BackboneRun, out: dict[str, Any]) -> None:
    lines = [
        "",
        f"=== {run.name}: {run.onnx.name}  providers={','.join(run.providers)}",
        *(f"    note: {note}" for note in run.notes),
        "CPU columns: % of all cores; bench = this process (raw session or client threads), "
        "service = server process, foreign = everything else",
        *_raw_lines(run),
        *_service_lines(run, out),
        *_latency_lines(run),
        *_breakdown_lines(run),
    ]
    if out["disturbed"]:
        lines.append(
            f"WARNING: other processes used up to {out['foreign_cpu_pct_max']:.0f}% of the CPU during a "
            "phase: these numbers are disturbed; rerun on a quiet machine"
        )
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    names = list(BACKBONES) if args.backbone == "all" else [args.backbone]
    machine = machine_info()
    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hemascope-bench-") as tmp:
        for name in names:
            run = bench_backbone(name, args, Path(tmp))
            summaries[name] = summary(run, args, machine)
            print_table(run, summaries[name])
    cores, model, ort_version = machine["cpu_affinity"], machine["cpu_model"], machine["onnxruntime"]
    print(f"machine: {cores} cores ({model}), onnxruntime {ort_version}")
    print(json.dumps(summaries[names[0]] if len(names) == 1 else summaries), flush=True)


if __name__ == "__main__":
    main()
