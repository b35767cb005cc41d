"""A service under test as a subprocess (``hemascope serve ...`` on free ports), its metrics, its channels.

The service runs in its own process, as deployed: an in-process server would share the benchmark's GIL with
the client threads and understate the service.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

SERVER_START_TIMEOUT_S = 300.0
SERVING_RE = re.compile(r"serving on (\S+):(\d+); metrics on port (\d+)")
BATCH_HISTOGRAM = "hemascope_batch_size"


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log_path: Path


def hemascope_command() -> list[str]:
    beside = Path(sys.executable).with_name("hemascope")
    found = str(beside) if beside.is_file() else shutil.which("hemascope")
    if found is None:
        raise SystemExit("the `hemascope` command is not installed (pip install -e .)")
    return [found]


@contextlib.contextmanager
def start_service(command: Sequence[str], env: Mapping[str, str], log_path: Path) -> Iterator[ServerProcess]:
    """Runs ``command`` (which must serve on port 0 and metrics port 0) until it logs where it serves.

    Its stderr goes to ``log_path``; on leaving the context it gets SIGTERM, then SIGKILL after 30 s.
    """
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(list(command), env=dict(env), stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        match = _wait_serving(proc, log_path)
        host, port, metrics_port = match.group(1), match.group(2), int(match.group(3))
        yield ServerProcess(proc, f"{host}:{port}", metrics_port, log_path)
    finally:
        _stop(proc)


def _wait_serving(proc: subprocess.Popen[bytes], log_path: Path) -> re.Match[str]:
    """The "serving on HOST:PORT; metrics on port N" line of the service's log, once it appears."""
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric_histogram(server: ServerProcess, name: str = BATCH_HISTOGRAM) -> tuple[float, float]:
    """(sum, count) of the histogram ``name`` (default: the micro-batch size), from the service's /metrics."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
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
