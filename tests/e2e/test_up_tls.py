"""``hemascope up --tls-dir`` with a CA made by ``hemascope tls dev-ca``: the gateway's port speaks TLS and is
health-checked over TLS, the gateway and the services talk mutual TLS (a plaintext client cannot reach a
service), an analysis goes through end to end, and an administrative RPC answers only the admin certificate.
Also: a Redis password given to ``up`` reaches the services' environment, never their command lines."""

from __future__ import annotations

import json
import os
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

from hemascope.commands.up import StackPlan, gateway_spec, service_specs
from hemascope.data import REPO_ROOT
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc

HEMASCOPE = Path(sys.executable).with_name("hemascope")
START_TIMEOUT = 600.0


@dataclass
class Stack:
    process: subprocess.Popen[str]
    state_file: Path
    pki: Path
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

    def address(self, name: str) -> str:
        children = {c["name"]: c for c in json.loads(self.state_file.read_text())["children"]}
        return str(children[name]["address"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("tls-stack")
    pki = folder / "pki"
    made = subprocess.run(
        [str(HEMASCOPE), "tls", "dev-ca", str(pki)], capture_output=True, text=True, timeout=120, check=False
    )
    assert made.returncode == 0, made.stderr
    env = {
        **os.environ,
        "HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir),
        "HEMASCOPE_FEATURE_INTRA_OP_THREADS": "1",
    }
    command = [str(HEMASCOPE), "up", "--free-ports", "--without", "detector", "--without", "explain"]
    command += ["--without", "console"]
    command += ["--tls-dir", str(pki), "--state-file", str(folder / "state.json")]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    stack = Stack(process, folder / "state.json", pki)
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


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HEMASCOPE), *args], capture_output=True, text=True, timeout=300, check=False, cwd=REPO_ROOT
    )


def test_the_tls_gateway_starts_and_is_health_checked_over_tls(stack: Stack) -> None:
    gateway = stack.address("gateway")
    assert run("health", "--ca", str(stack.pki / "ca.pem"), gateway).returncode == 0
    assert run("health", gateway).returncode == 1  # the port speaks TLS only
    hints = [line for line in stack.text.splitlines() if line.startswith("try: ")]
    assert hints and all(f"--ca {stack.pki / 'ca.pem'}" in hint for hint in hints)


def test_an_analysis_crosses_mutual_tls_to_the_services(stack: Stack) -> None:
    result = run(
        "analyze",
        "samples/MYO_0004.jpg",
        "--address",
        stack.address("gateway"),
        "--ca",
        str(stack.pki / "ca.pem"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("MYO_0004.jpg: myeloblast")


def test_services_refuse_plaintext_and_answer_admin_rpcs_only_for_the_admin(stack: Stack) -> None:
    classifier = stack.address("classifier")
    with grpc.insecure_channel(classifier) as plain:
        stub = classifier_pb2_grpc.ClassifierServiceStub(plain)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListModels(classifier_pb2.ListModelsRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = (stack.pki / "ca.pem").read_bytes()
    for who, expected in (("client", grpc.StatusCode.PERMISSION_DENIED), ("admin", None)):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(stack.pki / f"{who}-key.pem").read_bytes(),
            certificate_chain=(stack.pki / f"{who}.pem").read_bytes(),
        )
        with grpc.secure_channel(classifier, credentials) as channel:
            stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
            try:
                stub.ReloadBundle(classifier_pb2.ReloadBundleRequest(), timeout=60)
                code = None
            except grpc.RpcError as exc:
                code = exc.code()
        assert code == expected, who


def test_the_redis_password_goes_into_the_environment_never_the_command_line(tmp_path: Path) -> None:
    password = tmp_path / "redis.password"
    password.write_text("s3cret-pass\n")
    key = tmp_path / "cache.key"
    key.write_text("k" * 64)
    plan = StackPlan(redis_url="redis://127.0.0.1:6379/0", redis_password_file=password, cache_key_file=key)
    specs = {spec.name: spec for spec in service_specs(plan, {})}
    for name in ("feature", "explain"):
        spec = specs[name]
        assert spec.env[f"HEMASCOPE_{name.upper()}_REDIS_PASSWORD"] == "s3cret-pass"
        assert spec.env[f"HEMASCOPE_{name.upper()}_CACHE_KEY_FILE"] == str(key.absolute())
        assert all("s3cret" not in arg for arg in spec.argv)
    assert "REDIS" not in " ".join(specs["classifier"].env)
    assert all("s3cret" not in value for value in gateway_spec(plan, {}).env.values())
