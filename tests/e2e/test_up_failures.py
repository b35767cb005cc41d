"""``hemascope up`` when something is wrong: it stops at once with the reason and a way out, never hangs
until its start timeout and never prints a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from hemascope.data import REPO_ROOT

HEMASCOPE = Path(sys.executable).with_name("hemascope")


def run_up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEMASCOPE), "up", *args, "--start-timeout", "3000"],
        capture_output=True,
        text=True,
        timeout=900,  # far below --start-timeout: only a fast failure passes
        check=False,
        cwd=REPO_ROOT,
    )


def test_a_service_that_cannot_start_stops_up_with_its_own_message_and_status() -> None:
    result = run_up("--free-ports", "--bundle", "samples", "--without", "detector")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()
    summary = next(line for line in last if "before it was ready" in line)
    assert summary.startswith("hemascope up: ")
    assert "exited with status 2" in summary
    assert "no manifest.json in samples" in summary
    assert "hemascope is up" not in result.stdout


def test_a_taken_port_names_the_way_out_before_anything_starts() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_up("--free-ports", "--port", f"gateway={port}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"port {port} (gateway)" in result.stderr
    assert "--free-ports" in result.stderr and "--port gateway=PORT" in result.stderr
    assert "starting" not in result.stderr  # nothing was started
