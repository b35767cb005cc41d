"""``hemascope up`` with API keys and an audit trail, without the detector and explain services: the summary
names the metrics ports and a command that works, a missing key is answered by naming ``--api-key``, the
absent services are reported as not running (never as a circuit trip), and the research console it starts
answers on its printed address and lets a listed key in."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hemascope.data import REPO_ROOT

HEMASCOPE = Path(sys.executable).with_name("hemascope")
START_TIMEOUT = 600.0


@dataclass
class Stack:
    process: subprocess.Popen[str]
    state_file: Path
    key: str
    audit: Path
    output: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def children(self) -> dict[str, dict[str, object]]:
        return {c["name"]: c for c in json.loads(self.state_file.read_text())["children"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("secured")
    keys = folder / "keys.json"
    made = subprocess.run(
        [str(HEMASCOPE), "gateway", "add-key", "test-lis", "--keys-file", str(keys)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    env = {
        **os.environ,
        "HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir),
        "HEMASCOPE_FEATURE_INTRA_OP_THREADS": "1",
    }
    env.pop("HEMASCOPE_API_KEY", None)
    command = [str(HEMASCOPE), "up", "--free-ports", "--without", "detector", "--without", "explain"]
    command += ["--api-keys-file", str(keys), "--audit-log", str(folder / "audit.jsonl")]
    command += ["--state-file", str(folder / "state.json")]
    users = folder / "console-users.jsonl"
    subprocess.run(
        [
            str(HEMASCOPE),
            "console",
            "add-user",
            "lab-reviewer",
            "--role",
            "reviewer",
            "--users-file",
            str(users),
        ],
        env=env | {"HEMASCOPE_API_KEY": made.stdout.strip()},
        capture_output=True,
        check=True,
        timeout=120,
    )
    command += ["--console-users-file", str(users), "--console-database-url", f"sqlite:///{folder / 'c.db'}"]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    stack = Stack(process, folder / "state.json", made.stdout.strip(), folder / "audit.jsonl")
    try:
        until = time.monotonic() + START_TIMEOUT
        while "Ctrl-C" not in stack.text and process.poll() is None and time.monotonic() < until:
            time.sleep(0.25)
        assert process.poll() is None and "Ctrl-C" in stack.text, stack.text
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(120)


def analyze(stack: Stack, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    gateway = stack.children()["gateway"]["address"]
    env = {k: v for k, v in os.environ.items() if k != "HEMASCOPE_API_KEY"}
    if key is not None:
        env["HEMASCOPE_API_KEY"] = key
    return subprocess.run(
        [str(HEMASCOPE), "analyze", "--address", str(gateway), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )


def test_the_summary_and_state_file_name_every_metrics_port(stack: Stack) -> None:
    children = stack.children()
    assert set(children) == {"feature", "classifier", "gateway", "console"}
    for name, child in children.items():
        if name == "console":
            continue
        port = child["metrics_port"]
        assert isinstance(port, int) and port > 0
        assert f"{name:<11} {child['address']:<21} metrics :{port}" in stack.text
    assert "not running: detector, explain" in stack.text
    hints = [line for line in stack.text.splitlines() if line.startswith("try: ")]
    assert hints and all("--api-key" in hint for hint in hints)
    assert not any("--explain" in hint or "--detect" in hint for hint in hints)


def test_a_missing_key_is_answered_by_naming_the_option(stack: Stack) -> None:
    result = analyze(stack, "samples/MYO_0004.jpg")
    assert result.returncode == 2, result.stderr
    assert "--api-key" in result.stderr and "HEMASCOPE_API_KEY" in result.stderr
    assert "x-api-key" not in result.stderr and "Traceback" not in result.stderr
    wrong = analyze(stack, "samples/MYO_0004.jpg", "--api-key", "hsk_wrong")
    assert wrong.returncode == 2 and "refused the API key" in wrong.stderr


def test_an_absent_service_is_reported_as_not_running(stack: Stack) -> None:
    result = analyze(stack, "samples/MYO_0004.jpg", "samples/BA_101611.jpg", "--explain", key=stack.key)
    assert result.returncode == 3, result.stdout + result.stderr  # partial: no explanations
    assert result.stdout.count("! no explanation: the explain service is not running") == 2
    assert "CIRCUIT" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("MYO_0004.jpg: myeloblast")
    assert any(line.startswith("BA_101611.jpg: ") for line in lines)
    assert stack.audit.read_text().count("\n") >= 2  # the audit trail recorded the calls


def test_the_console_answers_on_its_printed_address_and_lets_a_listed_key_in(stack: Stack) -> None:
    address = str(stack.children()["console"]["address"])
    assert f"console     {address:<21} http://{address}" in stack.text
    assert "console: log in with a gateway API key listed in" in stack.text
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"http://{address}/healthz", timeout=30) as response:
        assert response.status == 200
    with opener.open(f"http://{address}/login", timeout=30) as response:
        token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode()).group(1)  # type: ignore[union-attr]
    form = urllib.parse.urlencode({"csrf_token": token, "api_key": stack.key}).encode()
    with opener.open(f"http://{address}/login", data=form, timeout=60) as response:
        page = response.read().decode()  # the redirect is followed to the analyse page
    assert "lab-reviewer (reviewer)" in page and 'action="/analyse"' in page
