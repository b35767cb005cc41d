"""End-to-end tests of the ``hemascope`` command: ``serve feature`` as a real process, ``embed`` against it.

The service runs as a subprocess on port 0 (metrics on port 0); its "serving on HOST:PORT" line on stderr
says where it listens. The ONNX export goes to the session's model cache, so only the first start exports.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

HEMASCOPE = Path(sys.executable).with_name("hemascope")
START_TIMEOUT = 120.0  # the first start exports the backbone to ONNX
COMMAND_TIMEOUT = 120.0
SERVING_LINE = re.compile(
    r"feature service \((?P<backbone>[\w.-]+)\) serving on (?P<host>[\d.]+):(?P<port>\d+)"
)


def cli_env(model_cache_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"] = str(model_cache_dir)
    env.update(extra)
    return env


@dataclass
class ServeProcess:
    """A running ``hemascope serve feature`` whose stderr is read by a thread (so the pipe never fills)."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)
    address: str = ""
    reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_serving(self, timeout: float = START_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no serving line after {timeout} s:\n{self.text}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"serve exited with {self.process.wait()} before serving:\n{self.text}")
            match = SERVING_LINE.search(line)
            if match:
                self.address = f"{match['host']}:{match['port']}"
                return match

    @property
    def text(self) -> str:
        return "".join(self.stderr)

    def kill(self) -> None:
        """Kills the process if it still runs, and waits until all its stderr has been read."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=10)


def start_serve(env: dict[str, str], *args: str) -> ServeProcess:
    process = subprocess.Popen(
        [str(HEMASCOPE), "serve", "feature", "--port", "0", "--metrics-port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return ServeProcess(process)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEMASCOPE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def feature_service(model_cache_dir: Path) -> Iterator[ServeProcess]:
    """One ``serve feature`` process for the embed tests of this module."""
    serve = start_serve(cli_env(model_cache_dir))
    try:
        match = serve.wait_serving()
        assert match["backbone"] == "efficientnet_lite0_blood"
        yield serve
    finally:
        serve.kill()


def test_embed_through_the_service_hits_the_cache_the_second_time(
    feature_service: ServeProcess, model_cache_dir: Path, real_images: list[Path]
) -> None:
    image = str(real_images[0])
    result = run_cli(
        cli_env(model_cache_dir), "embed", "--address", feature_service.address, "--json", image, image
    )
    assert result.returncode == 0, result.stderr

    lines = json_lines(result.stdout)
    assert len(lines) == 2
    for line in lines:
        assert line["image"] == image
        assert line["dimension"] == 1280
        assert line["backbone"] == "efficientnet_lite0_blood"
        assert isinstance(line["weights_hash"], str)
        assert len(line["weights_hash"]) == 64
    assert lines[0]["cache_hit"] is False
    assert lines[1]["cache_hit"] is True
    assert lines[0]["content_hash"] == lines[1]["content_hash"]


def test_embed_of_a_non_image_fails_with_invalid_argument(
    feature_service: ServeProcess, model_cache_dir: Path, tmp_path: Path, real_images: list[Path]
) -> None:
    junk = tmp_path / "notes.jpg"
    junk.write_bytes(b"this is a text file, not an image\n" * 10)
    good = str(real_images[2])

    result = run_cli(
        cli_env(model_cache_dir), "embed", "--address", feature_service.address, "--json", str(junk), good
    )
    assert result.returncode == 1, result.stderr
    lines = json_lines(result.stdout)
    assert len(lines) == 2
    error = lines[0]["error"]
    assert isinstance(error, dict)
    assert lines[0]["image"] == str(junk)
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"]
    # the failure of one image does not stop the next one
    assert lines[1]["image"] == good
    assert lines[1]["dimension"] == 1280


def test_sigterm_stops_the_service_gracefully(model_cache_dir: Path, real_images: list[Path]) -> None:
    serve = start_serve(cli_env(model_cache_dir, HEMASCOPE_FEATURE_GRACE_PERIOD_S="10"))
    try:
        serve.wait_serving()
        with grpc.insecure_channel(serve.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=30) == 0, serve.text
    finally:
        serve.kill()

    # nothing listens there any more
    with grpc.insecure_channel(serve.address) as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_resnet50_with_a_missing_checkpoint_exits_2(model_cache_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-resnet50.pth"
    serve = start_serve(
        cli_env(model_cache_dir, HEMASCOPE_FEATURE_RESNET50_CHECKPOINT=str(missing)), "--backbone", "resnet50"
    )
    try:
        code = serve.process.wait(timeout=COMMAND_TIMEOUT)
    finally:
        serve.kill()
    assert code == 2, serve.text
    assert "cannot start" in serve.text
    assert "checkpoint" in serve.text.lower()
    assert str(missing) in serve.text
    assert not SERVING_LINE.search(serve.text)


def test_embed_in_process(model_cache_dir: Path, real_images: list[Path]) -> None:
    image = str(real_images[4])
    result = run_cli(cli_env(model_cache_dir), "embed", image)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith(f"{image}: ")
    assert "1280-d" in lines[0]
    assert "efficientnet_lite0" in lines[0]
