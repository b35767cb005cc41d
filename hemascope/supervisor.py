"""A small process supervisor: starts gRPC services as child processes, waits until their health checks
say SERVING, restarts a child that dies (with exponential backoff and a restart limit) and stops them all
cleanly (SIGTERM, a grace period, then SIGKILL).

Children run in their own session, so a Ctrl-C in the terminal reaches only the supervisor, which then
stops them in the reverse order of their start (the gateway before the services it calls). Each child's
stdout and stderr are forwarded line by line with a ``[name]`` prefix. ``hemascope up`` is built on it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Reporter = Callable[[str], None]
TAIL_LINES = 20
"""Lines of each child's output kept to explain why it exited."""


class ChildFailed(RuntimeError):
    """A child exited before it was ready; carries its exit status and the end of its output."""

    def __init__(self, name: str, exit_code: int, output: Sequence[str]) -> None:
        super().__init__(f"{name} exited with status {exit_code} before it was ready")
        self.name = name
        self.exit_code = exit_code
        self.output = list(output)

    @property
    def last_message(self) -> str:
        """The child's last non-empty output line (its own account of why it stopped), or ''."""
        return next((line.strip() for line in reversed(self.output) if line.strip()), "")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the supervisor keeps it for the child across restarts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class HealthTls:
    """How to reach a TLS port for its health check: the CA that signed its certificate, and the client
    certificate to present when it requires one (mutual TLS)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key is not None else None,
            certificate_chain=self.cert.read_bytes() if self.cert is not None else None,
        )


def _channel(address: str, tls: HealthTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.credentials())


def health_status(address: str, timeout: float = 2.0, tls: HealthTls | None = None) -> bool:
    """True when the gRPC health check at ``address`` (overall service "") says SERVING; over TLS with
    ``tls``."""
    with _channel(address, tls) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def http_health_status(url: str, timeout: float = 2.0) -> bool:
    """True when an HTTP GET of ``url`` answers 200 (children that speak HTTP, such as the console)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child: its command line, extra environment and the port its health check answers on."""

    name: str
    argv: Sequence[str]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    metrics_port: int | None = None
    tls: HealthTls | None = None
    """TLS for the health check (None: plaintext)."""
    http_health_path: str | None = None
    """For an HTTP child: the path answering 200 when it is ready (None: a gRPC health check)."""

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.port}"


@dataclass
class Child:
    """A supervised child and its history."""

    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    restart_times: list[float] = field(default_factory=list)
    next_start: float | None = None
    gave_up: bool = False
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "address": self.spec.address,
            "metrics_port": self.spec.metrics_port,
            "pid": self.pid,
            "running": self.running,
            "restarts": self.restarts,
            "exit_codes": list(self.exits),
            "gave_up": self.gave_up,
        }


@dataclass
class SupervisorConfig:
    """Restart and stop policy."""

    grace_s: float = 15.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    max_restarts: int = 5
    restart_window_s: float = 300.0
    poll_s: float = 0.2


class Supervisor:
    """Starts, watches, restarts and stops child processes. Thread-safe; one monitor thread."""

    def __init__(
        self,
        config: SupervisorConfig | None = None,
        *,
        report: Reporter = _stderr,
        state_file: Path | None = None,
        output: IO[str] | None = None,
    ) -> None:
        self.config = config or SupervisorConfig()
        self._report = report
        self._state_file = state_file
        self._output = output if output is not None else sys.stderr
        self._children: dict[str, Child] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._pumps: list[threading.Thread] = []

    # -- starting ---------------------------------------------------------------------------------------
    def start(self, spec: ChildSpec) -> Child:
        """Spawns ``spec`` now and supervises it from then on."""
        with self._lock:
            if spec.name in self._children:
                raise ValueError(f"a child named {spec.name!r} is already supervised")
            child = Child(spec)
            self._children[spec.name] = child
            self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, **child.spec.env}
        process = subprocess.Popen(
            list(child.spec.argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.process = process
        child.next_start = None
        pump = threading.Thread(
            target=self._pump, args=(child, process), name=f"out-{child.spec.name}", daemon=True
        )
        pump.start()
        child.pump = pump
        self._pumps.append(pump)
        self._write_state()

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            child.tail.append(line)
            try:
                self._output.write(f"[{child.spec.name}] {line}\n")
                self._output.flush()
            except ValueError:  # our output was closed (interpreter shutting down)
                return

    def wait_healthy(self, names: Sequence[str] | None = None, timeout: float = 600.0) -> None:
        """Blocks until every named child (default: all) answers SERVING; raises ``RuntimeError`` when one
        gives up (exits more often than the restart limit allows) or the time runs out.

        Before :meth:`watch` has started (nothing restarts children yet), a child that exits fails the
        wait at once with :class:`ChildFailed`, carrying its exit status and the end of its output.
        """
        until = time.monotonic() + timeout
        pending = list(names) if names is not None else list(self._children)
        while pending:
            if self._stopping.is_set():
                raise RuntimeError("stopped while waiting for the services")
            for name in list(pending):
                child = self._children[name]
                if child.gave_up:
                    raise RuntimeError(f"{name} exited {len(child.exits)} times ({child.exits}); gave up")
                self._fail_if_exited(child)
                if child.running and self._healthy(child.spec):
                    pending.remove(name)
            if pending and time.monotonic() > until:
                raise RuntimeError(f"not SERVING after {timeout:.0f} s: {', '.join(pending)}")
            if pending:
                self._stopping.wait(0.25)

    @staticmethod
    def _healthy(spec: ChildSpec) -> bool:
        if spec.http_health_path is not None:
            return http_health_status(f"http://{spec.address}{spec.http_health_path}")
        return health_status(spec.address, tls=spec.tls)

    def _fail_if_exited(self, child: Child) -> None:
        if self._monitor is not None or child.process is None:
            return
        code = child.process.poll()
        if code is None:
            return
        if child.pump is not None:
            child.pump.join(timeout=5)  # the rest of its output, so the reason is in the tail
        raise ChildFailed(child.spec.name, code, child.tail)

    # -- watching ---------------------------------------------------------------------------------------
    def watch(self) -> None:
        """Starts the monitor thread that restarts children which exit while the supervisor runs."""
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch_loop, name="supervisor", daemon=True)
            self._monitor.start()

    def _watch_loop(self) -> None:
        while not self._stopping.wait(self.config.poll_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                for child in self._children.values():
                    self._check(child, time.monotonic())

    def _check(self, child: Child, now: float) -> None:
        if child.gave_up or child.process is None:
            return
        if child.next_start is None:
            code = child.process.poll()
            if code is None:
                return
            child.exits.append(code)
            window = self.config.restart_window_s
            child.restart_times = [t for t in child.restart_times if now - t < window]
            recent = len(child.restart_times)
            if recent >= self.config.max_restarts:
                child.gave_up = True
                self._report(
                    f"{child.spec.name} exited with code {code}; restarted {recent} times in the last "
                    f"{window:.0f} s: giving up on it"
                )
                self._write_state()
                return
            delay = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2**recent)
            child.next_start = now + delay
            self._report(f"{child.spec.name} exited with code {code}; restarting in {delay:.1f} s")
            self._write_state()
        elif now >= child.next_start:
            child.restarts += 1
            child.restart_times.append(now)
            self._spawn(child)
            self._report(f"{child.spec.name} restarted (pid {child.pid}, restart {child.restarts})")

    # -- state ------------------------------------------------------------------------------------------
    def children(self) -> list[Child]:
        with self._lock:
            return list(self._children.values())

    def child(self, name: str) -> Child:
        return self._children[name]

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "supervisor_pid": os.getpid(),
                "stopping": self._stopping.is_set(),
                "children": [child.describe() for child in self._children.values()],
            }

    def _write_state(self) -> None:
        if self._state_file is None:
            return
        temporary = self._state_file.with_suffix(self._state_file.suffix + ".tmp")
        temporary.write_text(json.dumps(self.state(), indent=2) + "\n")
        temporary.replace(self._state_file)

    # -- stopping ---------------------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Asks the monitor to stop restarting and ``wait_healthy`` to give up (safe in a signal handler);
        :meth:`stop` does the stopping."""
        self._stopping.set()

    def wait_stop_requested(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def stop(self) -> dict[str, int | None]:
        """Stops every child, last started first: SIGTERM, ``grace_s`` to exit, then SIGKILL. Returns each
        child's exit code (None: it was not running). Idempotent."""
        self._stopping.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5)
        codes: dict[str, int | None] = {}
        with self._lock:
            for child in reversed(list(self._children.values())):
                codes[child.spec.name] = self._stop_child(child)
            self._write_state()
        for pump in self._pumps:
            pump.join(timeout=5)
        return codes

    def _stop_child(self, child: Child) -> int | None:
        process = child.process
        if process is None or process.returncode is not None:
            return None
        if process.poll() is not None:  # died just now, not restarted
            return None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=self.config.grace_s)
        except subprocess.TimeoutExpired:
            self._report(f"{child.spec.name} did not stop in {self.config.grace_s:.0f} s: killing it")
            process.kill()
            return process.wait(timeout=30)
