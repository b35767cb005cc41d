"""The process supervisor behind ``hemascope up``, with real child processes serving gRPC health.

Each child is a small Python process running a real gRPC server with the standard health service (the
supervisor only needs health and signals; the real services are exercised in tests/e2e/test_stack.py).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hemascope.supervisor import (
    ChildFailed,
    ChildSpec,
    Supervisor,
    SupervisorConfig,
    free_port,
    health_status,
    http_health_status,
)

HEALTH_CHILD = """
import signal, sys, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.start()
print("child serving", flush=True)
done = threading.Event()
if sys.argv[2] == "obey":
    signal.signal(signal.SIGTERM, lambda *_: done.set())
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
done.wait()
server.stop(0).wait()
"""


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def health_spec(name: str, mode: str = "obey") -> ChildSpec:
    port = free_port()
    return ChildSpec(name, [sys.executable, "-c", HEALTH_CHILD, str(port), mode], port)


@pytest.fixture
def make_supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    made: list[Supervisor] = []

    def make(**config: float) -> Supervisor:
        options: dict[str, float] = {"backoff_initial_s": 0.1, "grace_s": 5.0} | config
        supervisor = Supervisor(
            SupervisorConfig(**options),  # type: ignore[arg-type]
            report=lambda _m: None,
            state_file=tmp_path / "state.json",
            output=io.StringIO(),
        )
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop()


def test_a_killed_child_is_restarted_on_its_port(
    make_supervisor: Callable[..., Supervisor], tmp_path: Path
) -> None:
    supervisor = make_supervisor()
    first, second = supervisor.start(health_spec("alpha")), supervisor.start(health_spec("beta"))
    supervisor.wait_healthy(timeout=60)
    supervisor.watch()
    old_pid = first.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: first.restarts == 1 and first.running)
    assert first.pid != old_pid
    assert first.exits == [-signal.SIGKILL]
    supervisor.wait_healthy(["alpha"], timeout=60)
    assert health_status(first.spec.address)
    assert second.restarts == 0
    state = json.loads((tmp_path / "state.json").read_text())
    alpha = next(c for c in state["children"] if c["name"] == "alpha")
    assert alpha["pid"] == first.pid
    assert alpha["restarts"] == 1
    assert supervisor.stop() == {"beta": 0, "alpha": 0}
    assert not first.running
    assert not second.running


def test_a_child_that_keeps_crashing_is_given_up(make_supervisor: Callable[..., Supervisor]) -> None:
    supervisor = make_supervisor(max_restarts=2, backoff_initial_s=0.05)
    spec = ChildSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"], free_port())
    child = supervisor.start(spec)
    supervisor.watch()
    with pytest.raises(RuntimeError, match="gave up"):
        supervisor.wait_healthy(timeout=60)
    assert child.gave_up
    assert child.restarts == 2
    assert child.exits == [3, 3, 3]


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    supervisor = make_supervisor(grace_s=0.5)
    stubborn = supervisor.start(health_spec("stubborn", mode="ignore"))
    supervisor.wait_healthy(timeout=60)
    start = time.monotonic()
    codes = supervisor.stop()
    assert codes == {"stubborn": -signal.SIGKILL}
    assert time.monotonic() - start >= 0.5
    assert not stubborn.running


def test_output_is_forwarded_with_the_child_name(tmp_path: Path) -> None:
    output = io.StringIO()
    supervisor = Supervisor(SupervisorConfig(grace_s=5), report=lambda _m: None, output=output)
    supervisor.start(health_spec("gamma"))
    try:
        supervisor.wait_healthy(timeout=60)
        wait_for(lambda: "[gamma] child serving" in output.getvalue())
    finally:
        supervisor.stop()


def test_a_child_that_exits_while_starting_fails_the_wait_with_its_message(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    supervisor = make_supervisor()
    supervisor.start(health_spec("steady"))
    failing = (
        "import sys; print('loading the bundle', flush=True); "
        "print('hemascope: classifier service cannot start: no manifest.json in samples', file=sys.stderr); "
        "raise SystemExit(2)"
    )
    supervisor.start(ChildSpec("classifier", [sys.executable, "-c", failing], free_port()))
    with pytest.raises(ChildFailed) as info:
        supervisor.wait_healthy(timeout=600)  # fails when the child exits, not when the time runs out
    assert info.value.name == "classifier"
    assert info.value.exit_code == 2
    message = "hemascope: classifier service cannot start: no manifest.json in samples"
    assert info.value.last_message == message
    assert "loading the bundle" in info.value.output


HTTP_CHILD = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_an_http_child_is_ready_when_its_health_path_answers_200(
    make_supervisor: Callable[..., Supervisor],
) -> None:
    port = free_port()
    spec = ChildSpec("web", [sys.executable, "-c", HTTP_CHILD, str(port)], port, http_health_path="/healthz")
    supervisor = make_supervisor()
    supervisor.start(spec)
    supervisor.wait_healthy(["web"], timeout=60)
    assert http_health_status(f"http://127.0.0.1:{port}/healthz")
    assert not http_health_status(f"http://127.0.0.1:{port}/other")
    assert not health_status(f"127.0.0.1:{port}", timeout=1)  # not gRPC: only the HTTP check says ready
