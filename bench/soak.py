"""Soak and fault test: mixed load through both protocols while Redis restarts, a service is killed and the
audit disk fills; bounded in time, loopback only.

The whole stack runs as ``hemascope up`` runs it (every service and the gateway as supervised processes on
127.0.0.1, free ports), with its own password-protected ``redis-server`` on a free loopback port and an
audit trail. Client threads call Analyze (``hemascope.client``; some with explanation, some detection on
the smear) and KServe ModelInfer (tritonclient, batches of 1-3 images) back to back. During the run:

* at 20% of the time Redis is killed (SIGKILL) and started again 5 s later;
* at 40% the classifier is killed (SIGKILL); the supervisor restarts it;
* at 60% the gateway's audit file may not grow (its RLIMIT_FSIZE lowered to the file's size, as a full disk
  would do) for 15 s, then may again.

Afterwards it checks that every call ended with a status (OK, or one of the codes a client can act on:
UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED; never INTERNAL, UNKNOWN or a hang past the call's
deadline), that the last 10 s window holds only successes (everything recovered), that the audit chain
verifies, and how the processes' memory moved (RSS medians of the second and the last fifth of the run,
after warm-up). Clients pause 0.5 s after UNAVAILABLE or RESOURCE_EXHAUSTED, as a well-behaved client
does. One JSON line on stdout; the exit status is 1 when a check fails.

    .venv/bin/python bench/soak.py --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from hemascope.client import HemascopeClient, HemascopeClientError
from hemascope.commands.up import GatewaySecurity, StackPlan, gateway_spec, parse_ports, service_specs
from hemascope.data import REPO_ROOT
from hemascope.supervisor import Supervisor, SupervisorConfig, free_port

ACCEPTABLE = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
CALL_TIMEOUT_S = 60.0


WINDOW_S = 10.0
BACKOFF_S = 0.5  # a well-behaved client pauses after UNAVAILABLE or RESOURCE_EXHAUSTED


@dataclass
class Tally:
    """Outcomes per protocol, per 10 s window, and the parts that failed inside answered Analyze calls."""

    started: float = field(default_factory=time.monotonic)
    outcomes: dict[str, Counter[str]] = field(
        default_factory=lambda: {"analyze": Counter(), "kserve": Counter()}
    )
    windows: dict[int, Counter[str]] = field(default_factory=dict)
    parts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, protocol: str, code: str, failed_parts: list[str] | None = None) -> None:
        window = int((time.monotonic() - self.started) // WINDOW_S)
        with self.lock:
            self.outcomes[protocol][code] += 1
            self.windows.setdefault(window, Counter())[code] += 1
            for part in failed_parts or ():
                self.parts[part] += 1
        if code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
            time.sleep(BACKOFF_S)


class RedisServer:
    """A non-persistent, password-protected ``redis-server`` on a loopback port."""

    def __init__(self, password: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("soak: redis-server is not installed")
        self.binary, self.password, self.port = binary, password, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self, pause_s: float, stop: threading.Event) -> None:
        self.kill()
        stop.wait(pause_s)
        self.start()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def stack(folder: Path, redis: RedisServer, log: Path) -> Iterator[Supervisor]:
    ports, metrics = parse_ports((), free=True)
    password_file = folder / "redis.password"
    password_file.write_text(redis.password)
    key_file = folder / "cache.key"
    key_file.write_text(secrets.token_hex(32))
    plan = StackPlan(
        ports=ports,
        metrics_ports=metrics,
        bundle=REPO_ROOT / "models" / "bloodcells-5class",
        redis_url=redis.url,
        redis_password_file=password_file,
        cache_key_file=key_file,
        security=GatewaySecurity(audit_log=folder / "audit.jsonl"),
    )
    env = {"HEMASCOPE_FEATURE_INTRA_OP_THREADS": "1", "HEMASCOPE_EXPLAIN_TORCH_THREADS": "1"}
    environ = {**os.environ, **env}
    with log.open("w") as output:
        supervisor = Supervisor(
            SupervisorConfig(grace_s=15, backoff_initial_s=1.0),
            output=output,
            report=lambda m: print(m, file=output),
        )
        try:
            for spec in service_specs(plan, environ):
                supervisor.start(replace(spec, env={**spec.env, **env}))
            supervisor.wait_healthy(timeout=600)
            supervisor.start(gateway_spec(plan, environ))
            supervisor.wait_healthy(["gateway"], timeout=600)
            supervisor.watch()
            yield supervisor
        finally:
            supervisor.stop()


def analyze_worker(
    address: str, cells: list[bytes], smear: bytes, tally: Tally, stop: threading.Event
) -> None:
    rng = random.Random(threading.get_ident())
    with HemascopeClient(address, timeout=CALL_TIMEOUT_S) as client:
        while not stop.is_set():
            detect = rng.random() < 0.15
            try:
                if detect:
                    report = client.analyze(smear, detect=True, skip_classification=True)
                else:
                    report = client.analyze(rng.choice(cells), explain=rng.random() < 0.2)
                failed = [p.part for p in report.parts if p.code != 0]
                tally.add("analyze", "OK", failed)
            except HemascopeClientError as exc:
                tally.add("analyze", exc.code.name)


def kserve_worker(address: str, cells: list[bytes], tally: Tally, stop: threading.Event) -> None:
    rng = random.Random(threading.get_ident())
    client = triton.InferenceServerClient(address)
    try:
        while not stop.is_set():
            batch = rng.sample(cells, rng.randint(1, 3))
            tensor = triton.InferInput("IMAGE", [len(batch)], "BYTES")
            tensor.set_data_from_numpy(np.array(batch, dtype=np.object_))
            try:
                client.infer("hemascope", [tensor], client_timeout=CALL_TIMEOUT_S)
                tally.add("kserve", "OK")
            except InferenceServerException as exc:
                tally.add("kserve", str(exc.status()).removeprefix("StatusCode."))
    finally:
        client.close()


def fill_audit_disk(pid: int, audit: Path, seconds: float, stop: threading.Event) -> None:
    """The gateway's audit file may not grow for ``seconds`` (RLIMIT_FSIZE at its size), then may again."""
    size = audit.stat().st_size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    stop.wait(seconds)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def audit_verify(path: Path) -> Any:
    """gateway.audit.verify, imported without bench/gateway.py (the benchmark launcher) in the way."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    sys.modules.pop("gateway", None)
    from gateway.audit import verify

    return verify(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="Length of the load (default 600).")
    parser.add_argument("--analyze-clients", type=int, default=3)
    parser.add_argument("--kserve-clients", type=int, default=2)
    args = parser.parse_args(argv)
    samples = REPO_ROOT / "samples"
    cells = [path.read_bytes() for path in sorted(samples.glob("*.jpg"))]
    smear = next((samples / "smear").glob("*.jpg")).read_bytes()
    folder = Path(tempfile.mkdtemp(prefix="hemascope-soak-"))
    redis = RedisServer(secrets.token_hex(16))
    redis.start()
    tally, stop, events = Tally(), threading.Event(), []
    memory: dict[str, list[float]] = {}
    try:
        with stack(folder, redis, folder / "stack.log") as supervisor:
            address = supervisor.child("gateway").spec.address
            workers = [
                threading.Thread(
                    target=analyze_worker, args=(address, cells, smear, tally, stop), daemon=True
                )
                for _ in range(args.analyze_clients)
            ] + [
                threading.Thread(target=kserve_worker, args=(address, cells, tally, stop), daemon=True)
                for _ in range(args.kserve_clients)
            ]
            started = tally.started = time.monotonic()
            for worker in workers:
                worker.start()
            faults: list[tuple[float, str, Callable[[], None]]] = [
                (0.2, "redis restarted", lambda: redis.restart(5.0, stop)),
                (
                    0.4,
                    "classifier killed",
                    lambda: os.kill(supervisor.child("classifier").pid or 0, signal.SIGKILL),
                ),
                (
                    0.6,
                    "audit disk full for 15 s",
                    lambda: fill_audit_disk(
                        supervisor.child("gateway").pid or 0, folder / "audit.jsonl", 15, stop
                    ),
                ),
            ]
            while (elapsed := time.monotonic() - started) < args.seconds:
                for child in supervisor.children():
                    if child.pid is not None and (mb := rss_mb(child.pid)) is not None:
                        memory.setdefault(child.spec.name, []).append(mb)
                while faults and elapsed >= faults[0][0] * args.seconds:
                    _, name, act = faults.pop(0)
                    events.append({"at_s": round(elapsed, 1), "event": name})
                    act()
                stop.wait(2.0)
            stop.set()
            for worker in workers:
                worker.join(CALL_TIMEOUT_S + 10)
            hung = sum(worker.is_alive() for worker in workers)
            restarts = {c.spec.name: len(c.exits) for c in supervisor.children()}
    finally:
        redis.kill()
    chain = audit_verify(folder / "audit.jsonl")
    codes = Counter[str]()
    for outcome in tally.outcomes.values():
        codes.update(outcome)
    unclear = {code: n for code, n in codes.items() if code not in ACCEPTABLE}
    last = tally.windows[max(tally.windows)] if tally.windows else Counter()
    recovered = last.get("OK", 0) > 0 and not (set(last) - {"OK"})

    def drift(values: list[float]) -> dict[str, float]:
        """RSS after warm-up (the second fifth of the run) against the last fifth."""
        fifth = max(1, len(values) // 5)
        first, last = statistics.median(values[fifth : 2 * fifth]), statistics.median(values[-fifth:])
        return {
            "first_mb": round(first, 1),
            "last_mb": round(last, 1),
            "change_pct": round(100 * (last / first - 1), 1),
        }

    result = {
        "seconds": args.seconds,
        "calls": {name: dict(outcome) for name, outcome in tally.outcomes.items()},
        "failed_parts": dict(tally.parts),
        "windows": {f"{int(w * WINDOW_S)}s": dict(c) for w, c in sorted(tally.windows.items())},
        "events": events,
        "restarts": restarts,
        "hung_clients": hung,
        "recovered": recovered,
        "unclear_outcomes": unclear,
        "audit": {"ok": chain.ok, "records": chain.records, "message": chain.message},
        "memory": {name: drift(values) for name, values in memory.items() if len(values) >= 5},
        "folder": str(folder),
    }
    print(json.dumps(result))
    return 0 if chain.ok and not unclear and not hung and recovered else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
