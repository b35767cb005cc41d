"""The container images' entry points, run here as the images run them (Docker cannot build on these
machines, so this is how the Dockerfile is kept honest).

For the PyTorch-free targets (feature, detector) each test reads the target's ENV from
deploy/docker/Dockerfile, lays out the files the target COPYs under a temporary root standing in for ``/``,
hides PyTorch, torchvision, onnx, ultralytics and grad-cam from the process (a stub package that raises
ImportError, first on PYTHONPATH), starts ``hemascope <CMD>``, and runs the HEALTHCHECK command against it,
then one real request. The feature target's model cache is filled by ``hemascope export-backbone`` with the
same ENV as the Dockerfile's backbone-export stage, as the image build does.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hemascope.data import REPO_ROOT

HEMASCOPE = Path(sys.executable).with_name("hemascope")
DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
HIDDEN = ("torch", "torchvision", "onnx", "ultralytics", "pytorch_grad_cam", "efficientnet_lite_pytorch")
START_TIMEOUT = 180.0
SERVING = re.compile(r"service \(.*\) serving on (?P<host>[\d.]+):(?P<port>\d+)")


def stage(name: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, args)] of one Dockerfile stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction == "FROM":
            if found is not None:
                break
            if args.split()[-1] == name:
                found = []
        elif found is not None:
            found.append((instruction, " ".join(args.split())))
    assert found is not None, name
    return found


def stage_env(name: str, root: Path) -> dict[str, str]:
    """The stage's HEMASCOPE_* ENV, absolute paths moved under ``root``."""
    env: dict[str, str] = {}
    for instruction, args in stage(name):
        if instruction == "ENV":
            for pair in args.split():
                key, value = pair.split("=", 1)
                if key.startswith("HEMASCOPE_"):
                    env[key] = str(root / value.lstrip("/")) if value.startswith("/opt/") else value
    return env


def copy_repo_files(name: str, root: Path) -> None:
    """Carries out the stage's ``COPY <repo paths> <dest>`` (not the --from ones) under ``root``."""
    for instruction, args in stage(name):
        if instruction != "COPY" or args.startswith("--from"):
            continue
        *sources, dest = args.split()
        target = root / dest.lstrip("/")
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH entry on which importing PyTorch and friends fails, as in the ONNX-only images."""
    where = tmp_path_factory.mktemp("no-torch")
    for name in HIDDEN:
        (where / name).mkdir()
        (where / name / "__init__.py").write_text(f"raise ImportError('{name} is not in this image')\n")
    return where


def image_env(root: Path, no_torch: Path, target: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMASCOPE_")}
    env |= stage_env(target, root)
    env["PYTHONPATH"] = str(no_torch)
    env["HOME"] = str(root / "home" / "hemascope")
    service = stage(target)[-1][1].split('"')[3].upper()  # CMD ["serve", "<service>"]
    # Port 0 on loopback instead of the image's fixed port on 0.0.0.0: tests never race for ports.
    env |= {f"HEMASCOPE_{service}_HOST": "127.0.0.1", f"HEMASCOPE_{service}_PORT": "0"}
    env[f"HEMASCOPE_{service}_METRICS_PORT"] = "0"
    return env


class Served:
    def __init__(self, env: dict[str, str], args: list[str]) -> None:
        self.process = subprocess.Popen(
            [str(HEMASCOPE), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.text: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.text.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def address(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited with {self.process.wait()}:\n{''.join(self.text)}")
            match = SERVING.search(line)
            if match:
                return f"127.0.0.1:{match['port']}"
        raise AssertionError(f"not serving after {START_TIMEOUT} s:\n{''.join(self.text)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def healthcheck(target: str, address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The stage's HEALTHCHECK command, pointed at ``address``."""
    [args] = [a for i, a in stage(target) if i == "HEALTHCHECK"]
    command = json.loads(args.split(" CMD ", 1)[1])
    assert command[0] == "hemascope"
    command[-1] = address
    return subprocess.run(
        [str(HEMASCOPE), *command[1:]], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def run(target: str, env: dict[str, str]) -> Iterator[tuple[Served, str]]:
    cmd = [a for i, a in stage(target) if i == "CMD"]
    served = Served(env, json.loads(cmd[-1]))
    try:
        yield served, served.address()
    finally:
        served.stop()


@pytest.fixture(scope="module")
def feature_image(
    tmp_path_factory: pytest.TempPathFactory, no_torch: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("feature-root")
    copy_repo_files("backbone-export", root)
    export_env = {k: v for k, v in os.environ.items() if not k.startswith("HEMASCOPE_")}
    export_env |= stage_env("backbone-export", root)
    export = [a for i, a in stage("backbone-export") if i == "RUN" and "export-backbone" in a]
    # The export is made by root at build time and served by user 10001: the stage makes it world-readable.
    assert export == [
        'hemascope export-backbone --backbone "${BACKBONE}" && chmod -R a+rX /opt/hemascope/model-cache'
    ]
    [backbone] = [a.split("=", 1)[1] for i, a in stage("backbone-export") if i == "ARG" and "BACKBONE=" in a]
    made = subprocess.run(
        [str(HEMASCOPE), "export-backbone", "--backbone", backbone],
        capture_output=True,
        text=True,
        env=export_env,
        timeout=600,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    copy_repo_files("feature", root)
    env = image_env(root, no_torch, "feature")
    assert env["HEMASCOPE_FEATURE_BACKBONE"] == backbone  # the image serves the backbone it exported
    assert Path(made.stdout.strip()).parent == Path(env["HEMASCOPE_FEATURE_MODEL_CACHE_DIR"])
    for address_env in run("feature", env):
        yield address_env[1], env


def test_feature_image_serves_without_pytorch(feature_image: tuple[str, dict[str, str]]) -> None:
    address, env = feature_image
    health = healthcheck("feature", address, env)
    assert health.returncode == 0, health.stderr
    embedded = subprocess.run(
        [
            str(HEMASCOPE),
            "embed",
            str(REPO_ROOT / "samples" / "MYO_0004.jpg"),
            "--address",
            address,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert embedded.returncode == 0, embedded.stderr
    assert json.loads(embedded.stdout.splitlines()[0])["dimension"] == 1280


def test_feature_image_without_its_export_fails_clearly(tmp_path: Path, no_torch: Path) -> None:
    """An empty model cache in a PyTorch-free image is a start-up error (exit 2), never a download."""
    env = image_env(tmp_path, no_torch, "feature")
    served = Served(env, ["serve", "feature"])
    try:
        assert served.process.wait(timeout=START_TIMEOUT) == 2
    finally:
        served.stop()
    assert "cannot start" in "".join(served.text)


def test_detector_image_serves_without_pytorch(tmp_path: Path, no_torch: Path) -> None:
    copy_repo_files("detector", tmp_path)
    env = image_env(tmp_path, no_torch, "detector")
    assert Path(env["HEMASCOPE_DETECTOR_MODEL"]).is_file()
    for served, address in run("detector", env):
        health = healthcheck("detector", address, env)
        assert health.returncode == 0, health.stderr
        detected = subprocess.run(
            [
                str(HEMASCOPE),
                "detect",
                str(REPO_ROOT / "samples" / "smear" / "BloodImage_00002.jpg"),
                "--address",
                address,
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert detected.returncode == 0, detected.stderr + "".join(served.text)
        assert json.loads(detected.stdout.splitlines()[0])["counts"]
