"""The gateway benchmark's pieces: the stack as processes, image supply (cold and warm), the load driver."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.cpu import CpuSnapshot, CpuUsage, cpu_snapshot, cpu_usage
from benchlib.stats import percentiles

from hemascope.client import HemascopeClient
from hemascope.commands.up import StackPlan, gateway_spec, parse_ports, service_specs
from hemascope.supervisor import Supervisor, SupervisorConfig
from hemascope.v1 import analysis_pb2

_TICK = float(os.sysconf("SC_CLK_TCK"))
CALL_TIMEOUT_S = 120.0


@contextlib.contextmanager
def run_stack(bundle: Path, log_path: Path, env: dict[str, str]) -> Iterator[tuple[str, list[int]]]:
    """``hemascope up``'s processes (every service and the gateway) on free ports; yields the gateway's
    address and the pids. Their output goes to ``log_path``."""
    ports, metrics = parse_ports((), free=True)
    plan = StackPlan(ports=ports, metrics_ports=metrics, bundle=bundle)
    environ = {**os.environ, **env}
    with log_path.open("w") as log:
        supervisor = Supervisor(SupervisorConfig(grace_s=15), output=log, report=lambda m: print(m, file=log))
        try:
            for spec in service_specs(plan, environ):
                supervisor.start(dataclasses.replace(spec, env={**spec.env, **env}))
            supervisor.wait_healthy(timeout=600)
            gateway = gateway_spec(plan, environ)
            supervisor.start(dataclasses.replace(gateway, env={**gateway.env, **env}))
            supervisor.wait_healthy(["gateway"], timeout=600)
            pids = [child.pid for child in supervisor.children() if child.pid is not None]
            yield supervisor.child("gateway").spec.address, pids
        finally:
            supervisor.stop()


def _pid_cpu_s(pid: int) -> float:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (float(rest[11]) + float(rest[12])) / _TICK


def stack_snapshot(pids: Sequence[int]) -> CpuSnapshot:
    """A CPU snapshot whose "server" share is every process of the stack."""
    return dataclasses.replace(cpu_snapshot(), server_s=sum(_pid_cpu_s(pid) for pid in pids))


class ImagePool:
    """Encoded images handed out once each (cold: nothing cached yet) or cycled (warm)."""

    def __init__(self, images: Sequence[bytes]) -> None:
        self._images = list(images)
        self._next = 0
        self._lock = threading.Lock()

    def fresh(self) -> bytes:
        with self._lock:
            if self._next >= len(self._images):
                raise RuntimeError("out of unseen images: lower --seconds or add images")
            image = self._images[self._next]
            self._next += 1
            return image

    @property
    def used(self) -> int:
        return self._next


@dataclass
class Phase:
    """One load level: latencies of the calls that finished inside the window, failures, CPU."""

    label: str
    clients: int
    seconds: float
    samples: list[float] = field(default_factory=list)
    unexpected: int = 0  # responses not of the kind measured (a cache hit in a cold run, a failed part)
    errors: int = 0
    first_error: str = ""
    cpu: CpuUsage | None = None

    @property
    def p50_ms(self) -> float:
        return percentiles(self.samples, [50])[0]

    @property
    def p90_ms(self) -> float:
        return percentiles(self.samples, [90])[0]

    @property
    def per_s(self) -> float:
        return round(len(self.samples) / self.seconds, 2)

    def record(self) -> dict[str, object]:
        return {
            "clients": self.clients,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "per_s": self.per_s,
            "calls": len(self.samples),
            "unexpected": self.unexpected,
            "errors": self.errors,
            "cpu": dataclasses.asdict(self.cpu) if self.cpu else None,
        }


Work = Callable[[], bool]
"""One call; returns whether the answer is of the kind measured. Raises on failure."""


def run_phase(
    label: str,
    make_work: Callable[[], Work],
    clients: int,
    warmup: float,
    seconds: float,
    pids: Sequence[int],
) -> Phase:
    """``clients`` threads calling back to back; times the calls that end inside the window."""
    phase = Phase(label, clients, seconds)
    works = [make_work() for _ in range(clients)]
    start = time.perf_counter() + warmup
    end = start + seconds
    lock = threading.Lock()

    def loop(work: Work) -> None:
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                expected, failed = work(), False
            except Exception as exc:
                expected, failed = False, True
                with lock:
                    phase.first_error = phase.first_error or f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if start <= done <= end:
                with lock:
                    if failed:
                        phase.errors += 1
                    elif expected:
                        phase.samples.append(1000 * (done - began))
                    else:
                        phase.unexpected += 1

    threads = [threading.Thread(target=loop, args=(work,), daemon=True) for work in works]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    before = stack_snapshot(pids)
    time.sleep(max(0.0, end - time.perf_counter()))
    phase.cpu = cpu_usage(before, stack_snapshot(pids))
    for thread in threads:
        thread.join()
    return phase


def gateway_work(
    address: str,
    options: analysis_pb2.AnalyzeOptions,
    next_image: Callable[[], bytes],
    cold: bool,
    stages: list[dict[str, float]] | None = None,
) -> Callable[[], Work]:
    """A client per thread (its own channel) calling Analyze; an answer counts when every part is OK and
    the embedding's cache state is the one measured. ``stages`` collects each report's stage timings."""

    def make() -> Work:
        client = HemascopeClient(address, timeout=CALL_TIMEOUT_S)

        def work() -> bool:
            report = client.analyze(next_image(), options=options)
            if any(part.code != 0 for part in report.parts):
                raise RuntimeError(f"failed parts: {[(p.part, p.reason) for p in report.parts if p.code]}")
            if stages is not None:
                stages.append({timing.stage: timing.ms for timing in report.timings})
            return report.embedding.cache_hit != cold

        return work

    return make


def stage_medians(stages: Sequence[dict[str, float]]) -> dict[str, float]:
    """The median of each stage's milliseconds over the reports (the gateway's own timings)."""
    names = sorted({name for timings in stages for name in timings})
    return {name: percentiles([t[name] for t in stages if name in t], [50])[0] for name in names}
