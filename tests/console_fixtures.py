"""The console's test stack: the real feature, classifier, detector and explain services and the gateway
(in-process, port 0, API keys required), one gateway key per console role plus one the console does not
know, and the console app itself on a SQLite or PostgreSQL store."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from console.settings import ConsoleSettings
from console.users import add_user
from gateway.auth import add_key
from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.data import REPO_ROOT
from services.classifier.server import create_server as classifier_server
from services.classifier.settings import ClassifierSettings
from services.detector.server import create_server as detector_server
from services.detector.settings import DetectorSettings
from services.explain.server import create_server as explain_server
from services.explain.settings import ExplainSettings
from services.feature.server import create_server as feature_server
from services.feature.settings import FeatureSettings

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WAIT = 180.0
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROLES = ("viewer", "reviewer", "admin")
CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


@dataclass
class ConsoleStack:
    gateway_address: str
    users_file: Path
    keys: dict[str, str]
    """Gateway keys by console role (user names are the role names)."""
    stranger_key: str
    """A key the gateway accepts but the console's users file does not name."""
    console_only_key: str
    """A key in the console's users file that the gateway does not know."""
    services: dict[str, str]
    """The services' addresses by name (feature, classifier, detector, explain), for another gateway."""


@pytest.fixture(scope="session")
def console_stack(model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    common = {"port": 0, "metrics_port": None, "log_json": False}
    starting = {
        "feature": feature_server(
            FeatureSettings(**common, model_cache_dir=model_cache_dir, intra_op_threads=1)
        ),
        "classifier": classifier_server(ClassifierSettings(**common, bundle=BUNDLE)),
        "explain": explain_server(ExplainSettings(**common, bundle=BUNDLE, torch_threads=1)),
        "detector": detector_server(DetectorSettings(**common, intra_op_threads=1)),
    }
    for server, _ in starting.values():
        server.wait_ready(WAIT)
    folder = tmp_path_factory.mktemp("console-keys")
    gateway_keys = folder / "gateway-keys.jsonl"
    users = folder / "console-users.jsonl"
    keys = {role: add_key(gateway_keys, f"console-{role}") for role in ROLES}
    for role, key in keys.items():
        add_user(users, role, role, key)
    stranger = add_key(gateway_keys, "console-stranger")
    console_only = "hsk_" + secrets.token_urlsafe(32)
    add_user(users, "nobody-at-gateway", "admin", console_only)
    gateway, port = create_server(
        GatewaySettings(
            **common,
            feature_address=f"127.0.0.1:{starting['feature'][1]}",
            classifier_address=f"127.0.0.1:{starting['classifier'][1]}",
            detector_address=f"127.0.0.1:{starting['detector'][1]}",
            explain_address=f"127.0.0.1:{starting['explain'][1]}",
            api_keys_file=gateway_keys,
        )
    )
    gateway.wait_ready(WAIT)
    services = {name: f"127.0.0.1:{started[1]}" for name, started in starting.items()}
    yield ConsoleStack(f"127.0.0.1:{port}", users, keys, stranger, console_only, services)
    gateway.stop(1)
    for server, _ in starting.values():
        server.stop(1)


def small_dataset(data_dir: Path, root: Path, per_class: int = 2) -> Path:
    """A folder-per-class dataset at ``root``: ``per_class`` real cells of each class (symlinks into the
    shared data), for the Jobs page's evaluations."""
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for image in sorted((data_dir / "bloodcells-5class" / "val" / name).glob("*.jpg"))[:per_class]:
            (root / name / image.name).symlink_to(image)
    return root


def console_settings(stack: ConsoleStack, database_url: str, **overrides: object) -> ConsoleSettings:
    base: dict[str, object] = {
        "gateway_address": stack.gateway_address,
        "users_file": stack.users_file,
        "database_url": database_url,
        "gateway_timeout_s": 120.0,
    }
    return ConsoleSettings(**(base | overrides))


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped afterwards; skips when PostgreSQL is
    not reachable."""
    schema = f"console_test_{secrets.token_hex(4)}"
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def wait_for(condition: object, what: str, limit_s: float = 300.0) -> None:
    """Polls ``condition()`` until true; fails naming ``what`` after ``limit_s`` (a hang guard, not a
    timing assertion)."""
    until = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > until:
            pytest.fail(f"{what} did not happen within {limit_s} s")
        time.sleep(0.2)


class LiveServer:
    """The console on a real HTTP port (uvicorn in a thread), for the browser tests."""

    def __init__(self, app: Starlette) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_for(lambda: self.server.started, "the console's HTTP server start", 60)
        sockets = self.server.servers[0].sockets
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class BatchResultFolder:
    """A real ``hemascope batch analyze`` result in ``root / name``, and the summary the command printed."""

    root: Path
    name: str
    summary: dict[str, object]


@pytest.fixture(scope="session")
def batch_result(
    data_dir: Path, model_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> BatchResultFolder:
    """Two cells of every class and one file that is no image, analysed by the real ``hemascope batch
    analyze`` (a subprocess with its own local Ray, one worker) into a folder of a batch results root."""
    import json
    import os
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("batch-results")
    archive = small_dataset(data_dir, folder / "archive")
    (archive / "not-an-image.jpg").write_bytes(b"this is not an image")
    root = folder / "root"
    root.mkdir()
    env = os.environ | {"HEMASCOPE_FEATURE_MODEL_CACHE_DIR": str(model_cache_dir)}
    command = [
        sys.executable, "-m", "hemascope", "batch", "analyze", str(archive), "--out", str(root / "lab-run"),
        "--bundle", str(BUNDLE), "--workers", "1", "--batch-size", "8", "--no-progress", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return BatchResultFolder(root, "lab-run", summary)


@contextlib.contextmanager
def extra_gateway(
    stack: ConsoleStack, folder: Path, caller: str, user: str, role: str, **overrides: Any
) -> Iterator[tuple[str, str, Path]]:
    """A second gateway over ``stack``'s services with ``overrides`` of its settings, a key for ``caller``
    and a console users file naming it as ``user`` with ``role``: (address, key, users file)."""
    keys, users = folder / "gateway-keys.jsonl", folder / "console-users.jsonl"
    key = add_key(keys, caller)
    add_user(users, user, role, key)
    s = stack.services
    gateway, port = create_server(
        GatewaySettings(  # type: ignore[call-arg]
            port=0,
            metrics_port=None,
            log_json=False,
            feature_address=s["feature"],
            classifier_address=s["classifier"],
            detector_address=s["detector"],
            explain_address=s["explain"],
            api_keys_file=keys,
            **overrides,
        )
    )
    gateway.wait_ready(WAIT)
    try:
        yield f"127.0.0.1:{port}", key, users
    finally:
        gateway.stop(1)
