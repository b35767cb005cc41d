"""``hemascope serve console`` as a real process: asked to stop (SIGTERM from ``hemascope up`` or an
orchestrator, SIGINT from Ctrl-C), it shuts down and exits 0, so a supervisor sees a clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HEMASCOPE = Path(sys.executable).with_name("hemascope")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(process: subprocess.Popen[str], port: int) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(f"the console exited early: {process.communicate()[1]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError("the console never answered /healthz")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_signal_ends_the_console_with_exit_code_0(tmp_path: Path, signum: signal.Signals) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            str(HEMASCOPE),
            "serve",
            "console",
            "--port",
            str(port),
            "--gateway",
            "127.0.0.1:1",
            "--users-file",
            str(tmp_path / "users.jsonl"),
            "--database-url",
            f"sqlite:///{tmp_path / 'console.db'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        wait_healthy(process, port)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
