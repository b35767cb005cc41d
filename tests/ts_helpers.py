"""The TypeScript client (clients/typescript) for tests: compiled once per test run, scripts run by Node."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hemascope.data import REPO_ROOT

CLIENT = REPO_ROOT / "clients" / "typescript"
NODE_TIMEOUT_S = 600


@functools.cache
def _compile() -> Path:
    subprocess.run(
        [str(CLIENT / "node_modules" / ".bin" / "tsc"), "-p", str(CLIENT / "tsconfig.json")],
        check=True,
        timeout=NODE_TIMEOUT_S,
    )
    return CLIENT / "dist" / "test"


def compiled_scripts() -> Path:
    """The folder of the compiled test scripts (clients/typescript/dist/test); fails without Node or the
    client's packages (``scripts/setup.sh`` installs them)."""
    if shutil.which("node") is None or not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("the TypeScript client needs Node.js 20+ and its packages: run scripts/setup.sh")
    return _compile()


def run_node(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``node ARGS`` in the client's folder, output captured."""
    return subprocess.run(
        ["node", *args], check=False, capture_output=True, text=True, timeout=NODE_TIMEOUT_S, cwd=CLIENT
    )


def run_script(script: Path, config: dict[str, Any], folder: Path) -> Any:
    """Runs a compiled script with ``config`` (as a JSON file in ``folder``); its JSON answer."""
    path = folder / f"{script.stem}-config.json"
    path.write_text(json.dumps(config))
    done = run_node([str(script), str(path)])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
