"""End to end: ``hemascope up`` as a process (every service and the gateway as their own processes, real
Redis at 127.0.0.1:6379 db 15 with this test's own key prefix), real images through the gateway, one
service killed mid-run (partial results), restarted by ``up`` (recovery), bad inputs refused with
INVALID_ARGUMENT, ``hemascope analyze`` writing its files, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from hemascope.client import HemascopeClient, InvalidImage
from hemascope.v1 import analysis_pb2

HEMASCOPE = Path(sys.executable).with_name("hemascope")
REDIS_URL = "redis://127.0.0.1:6379/15"
START_TIMEOUT = 600.0


@dataclass
class UpProcess:
    process: subprocess.Popen[str]
    state_file: Path
    prefix: str
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

    def state(self) -> dict[str, dict[str, Any]]:
        data = json.loads(self.state_file.read_text())
        return {child["name"]: child for child in data["children"]}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    until = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[UpProcess]:
    folder = tmp_path_factory.mktemp("up")
    prefix = f"test-stack-{uuid.uuid4().hex[:8]}:"
    env = dict(os.environ)
    env |= {
        "HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir),
        "HEMASCOPE_FEATURE_CACHE_PREFIX": prefix,
        "HEMASCOPE_EXPLAIN_CACHE_PREFIX": prefix,
        "HEMASCOPE_FEATURE_INTRA_OP_THREADS": "1",
        "HEMASCOPE_DETECTOR_INTRA_OP_THREADS": "1",
        "HEMASCOPE_EXPLAIN_TORCH_THREADS": "1",
        # Recover quickly once the killed service is back.
        "HEMASCOPE_GATEWAY_BREAKER_RESET_S": "1",
        "HEMASCOPE_GATEWAY_CAPABILITIES_TTL_S": "0.5",
        "HEMASCOPE_GATEWAY_RETRIES": "0",
    }
    state_file = folder / "state.json"
    command = [
        str(HEMASCOPE),
        "up",
        "--free-ports",
        "--redis-url",
        REDIS_URL,
        "--state-file",
        str(state_file),
        "--without",
        "console",
    ]
    process = subprocess.Popen(
        [*command, "--grace", "10", "--restart-backoff", "3"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    stack = UpProcess(process, state_file, prefix)
    try:
        wait_for(lambda: "hemascope is up" in stack.text or process.poll() is not None, START_TIMEOUT, "up")
        assert process.poll() is None, stack.text
        yield stack
    finally:
        if process.poll() is None:
            process.kill()  # the test of the clean stop stops it first; this is the fallback
            process.wait(30)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def gateway(up: UpProcess) -> str:
    return str(up.state()["gateway"]["address"])


@pytest.fixture(scope="module")
def cells(data_dir: Path) -> list[Path]:
    root = data_dir / "bloodcells-5class" / "val"
    return [sorted((root / name).glob("*.jpg"))[1] for name in ("myeloblast", "basophil", "erythroblast")]


@pytest.fixture(scope="module")
def smear(data_dir: Path) -> Path:
    image_id = (data_dir / "bccd" / "ImageSets" / "Main" / "val.txt").read_text().split()[1]
    return data_dir / "bccd" / "JPEGImages" / f"{image_id}.jpg"


def part_codes(report: analysis_pb2.AnalyzeResponse) -> dict[str, int]:
    return {part.part: part.code for part in report.parts}


def test_up_prints_every_address_and_serves_real_images(
    up: UpProcess, gateway: str, cells: list[Path]
) -> None:
    state = up.state()
    assert set(state) == {"feature", "classifier", "detector", "explain", "gateway"}
    for name, child in state.items():
        assert f"{name:<11} {child['address']}" in up.text
        assert child["running"]
    assert f"Redis at {REDIS_URL}" in up.text
    with HemascopeClient(gateway, timeout=120) as client:
        first = client.analyze(cells[0], explain=True)
        second = client.analyze(cells[0])
    assert part_codes(first) == {"embedding": 0, "classification": 0, "explanation": 0}
    assert first.classification.consensus_label == "myeloblast"
    assert not first.embedding.cache_hit
    assert second.embedding.cache_hit  # from Redis
    assert any(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{up.prefix}*"))


def test_bad_inputs_get_invalid_argument_and_nothing_breaks(gateway: str, cells: list[Path]) -> None:
    data = cells[1].read_bytes()
    with HemascopeClient(gateway, timeout=120) as client:
        for bad in (b"", data[: len(data) // 3], b"not an image at all"):
            with pytest.raises(InvalidImage) as info:
                client.analyze(bad, detect=True, explain=True)
            assert info.value.code.name == "INVALID_ARGUMENT"
        with pytest.raises(Exception, match="INVALID_ARGUMENT"):
            client.analyze(data, detect_confidence=2.0)
        report = client.analyze(data)
    assert report.classification.consensus_label == "basophil"


def test_a_killed_service_gives_partial_results_then_recovers(
    up: UpProcess, gateway: str, smear: Path, cells: list[Path]
) -> None:
    old_pid = up.state()["detector"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not alive(old_pid) or up.state()["detector"]["pid"] != old_pid, 10, "the kill")
    with HemascopeClient(gateway, timeout=60) as client:
        # `up` restarts the detector after a 3 s backoff (and it takes seconds to load): this call lands
        # while it is down.
        report = client.analyze(cells[0], detect=True)
        codes = part_codes(report)
        assert codes["detection"] in (14, 4), report.parts  # UNAVAILABLE or DEADLINE_EXCEEDED
        assert codes["embedding"] == codes["classification"] == 0
        assert report.classification.consensus_label == "myeloblast"
        assert not report.HasField("detection")
        wait_for(lambda: up.state()["detector"]["restarts"] == 1, 60, "the restart")
        new_pid = up.state()["detector"]["pid"]
        assert new_pid != old_pid
        assert "detector exited with code -9; restarting" in up.text

        def detects() -> bool:
            return part_codes(client.analyze(smear, detect=True, skip_classification=True))["detection"] == 0

        wait_for(detects, 120, "detection to recover")
        recovered = client.analyze(smear, detect=True, skip_classification=True)
    assert len(recovered.detection.boxes) > 3


def test_analyze_command_writes_json_and_files(
    up: UpProcess, gateway: str, cells: list[Path], smear: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(cells[0].read_bytes()[:200])
    flags = ["--address", gateway, "--explain", "--detect", "--json", "--out", str(out)]
    result = subprocess.run(
        [str(HEMASCOPE), "analyze", *map(str, cells), str(smear), str(bad), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the broken image failed
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["image"]).name for r in lines] == [*(p.name for p in cells), smear.name, bad.name]
    records = {Path(r["image"]).name: r for r in lines}
    assert records[bad.name]["error"]["code"] == "INVALID_ARGUMENT"
    myeloblast = records[cells[0].name]
    assert myeloblast["report"]["classification"]["consensus_label"] == "myeloblast"
    assert myeloblast["outcome"] == "ok"
    assert (out / f"{cells[0].stem}-overlay.png").read_bytes().startswith(b"\x89PNG")
    assert (out / f"{smear.stem}-boxes.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(myeloblast["files"]) == sorted(
        str(out / f"{cells[0].stem}-{kind}.png") for kind in ("boxes", "overlay", "panel")
    )
    text = subprocess.run(
        [str(HEMASCOPE), "analyze", str(cells[1]), "--gateway", gateway],  # the older flag name still works
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert text.returncode == 0, text.stderr
    assert "basophil" in text.stdout
    assert "1 image: 1 complete, 0 partial, 0 failed" in text.stdout


def test_sigterm_stops_everything_cleanly(up: UpProcess) -> None:
    pids = [child["pid"] for child in up.state().values()]
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(120) == 0, up.text[-3000:]
    for pid in pids:
        assert not alive(pid)
    for name in ("gateway", "explain", "detector", "classifier", "feature"):
        assert f"{name} stopped (exit code 0)" in up.text
