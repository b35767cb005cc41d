"""The closed-loop throughput driver: N client threads calling the service back to back.

Each level warms up, then counts the calls completed inside a window of ``seconds`` (work in flight at both
ends of the window cancels out in steady state). Clients use either one channel shared by all of them or a
private channel (own TCP connection) each; :func:`choose_channel_mode` probes both briefly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from .cpu import CpuUsage, cpu_snapshot, cpu_usage
from .service import BATCH_HISTOGRAM, ServerProcess, metric_histogram, open_channel

CLIENT_COUNTS = (1, 4, 16)
CHANNEL_MODES = ("shared", "per-client")
CALL_TIMEOUT_S = 120.0
PROBE_SECONDS = 3.0
PROBE_WARMUP_S = 1.0

Call = Callable[[int], object]
"""One blocking RPC; the argument is a position to pick the request by. Failures raise ``grpc.RpcError``."""
CallFactory = Callable[[grpc.Channel], Call]
"""Makes a client's :data:`Call` on a channel (typically: a stub on it, and a request list to cycle over)."""


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
    calls_s: float  # calls completed per second inside the window
    errors: int
    mean_batch: float | None  # from the service's micro-batch histogram; None if it saw no batch
    cpu: CpuUsage
    first_error: str | None


def _client_loop(call: Call, index: int, window: Window, tally: Tally) -> None:
    """Calls back to back until the window ends; counts the calls that complete inside it."""
    position = index * 7  # clients start on different requests
    while time.perf_counter() < window.end:
        try:
            call(position)
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
    make_call: CallFactory,
    clients: int,
    mode: str,
    warmup: float,
    seconds: float,
    histogram: str = BATCH_HISTOGRAM,
) -> LoadResult:
    """``clients`` threads, each with its own call, on one shared channel or a private channel each."""
    private = mode == "per-client"
    channels = [open_channel(server.address, private=private) for _ in range(clients if private else 1)]
    calls = [make_call(channels[i % len(channels)]) for i in range(clients)]
    start = time.perf_counter() + warmup
    window = Window(start, start + seconds)
    tally = Tally([0] * clients, [0] * clients)
    threads = [
        threading.Thread(target=_client_loop, args=(calls[i], i, window, tally), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window.start - time.perf_counter()))
    hist_before, cpu_before = metric_histogram(server, histogram), cpu_snapshot(server.proc.pid)
    time.sleep(max(0.0, window.end - time.perf_counter()))
    hist_after, cpu_after = metric_histogram(server, histogram), cpu_snapshot(server.proc.pid)
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
    server: ServerProcess,
    make_call: CallFactory,
    requested: str,
    warmup: float,
    seconds: float,
    clients: int = max(CLIENT_COUNTS),
) -> tuple[str, dict[str, float]]:
    """``requested`` unless it is "auto"; then the faster layout at ``clients``, from a short probe of each.

    Returns the mode and the probe's calls per second by mode (empty when nothing was probed).
    """
    if requested != "auto":
        return requested, {}
    seconds = min(seconds, PROBE_SECONDS)
    warmup = min(warmup, PROBE_WARMUP_S)
    probe = {
        mode: run_load(server, make_call, clients, mode, warmup, seconds).calls_s for mode in CHANNEL_MODES
    }
    return max(probe, key=lambda mode: probe[mode]), probe
