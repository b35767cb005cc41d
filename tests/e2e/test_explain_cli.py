"""End-to-end: ``hemascope serve explain`` as its own process, ``hemascope explain --address`` against it,
SIGTERM, and a start without a bundle (exit 2)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from hemascope.data import REPO_ROOT

HEMASCOPE = Path(sys.executable).with_name("hemascope")
BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
SERVING = re.compile(r"explain service \(bundle .+\) serving on (?P<host>[\d.]+):(?P<port>\d+)")
TIMEOUT = 180


def serve(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(HEMASCOPE), "serve", "explain", "--port", "0", "--metrics-port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HEMASCOPE_EXPLAIN_LOG_JSON": "false", **env},
    )


def test_serve_explain_then_explain_through_it_then_sigterm(data_dir: Path, tmp_path: Path) -> None:
    image = sorted((data_dir / "bloodcells-5class" / "val" / "myeloblast").glob("*.jpg"))[0]
    process = serve("--bundle", str(BUNDLE), HEMASCOPE_EXPLAIN_TORCH_THREADS="1")
    try:
        assert process.stderr is not None
        address = ""
        for line in process.stderr:  # the serving line comes after the load
            match = SERVING.search(line)
            if match:
                address = f"{match['host']}:{match['port']}"
                break
        assert address, "the explain service never said where it serves"
        out = tmp_path / "overlay.png"
        args = [
            "explain",
            str(image),
            "--model",
            "logistic_regression",
            "--out",
            str(out),
            "--address",
            address,
        ]
        result = subprocess.run(
            [str(HEMASCOPE), *args, "--json"], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert record["method"] == "gradcam" and record["class_name"] == "myeloblast"
        assert Image.open(out).size == Image.open(image).size == (record["width"], record["height"])
        panel = Image.open(record["panel"])  # the image beside its overlay, wider than both together
        assert record["panel"] == str(tmp_path / "overlay-panel.png")
        assert panel.width > 2 * record["width"] * panel.height / record["height"] * 0.6
        study = tmp_path / "study.png"
        jet40 = subprocess.run(
            [str(HEMASCOPE), *args[:-3], str(study), "--address", address, "--overlay", "jet40"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert jet40.returncode == 0, jet40.stderr
        assert Image.open(study).tobytes() != Image.open(out).tobytes()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_serve_explain_without_a_bundle_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HEMASCOPE_EXPLAIN_BUNDLE"}
    result = subprocess.run(
        [str(HEMASCOPE), "serve", "explain", "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert "explain service cannot start" in result.stderr and "HEMASCOPE_EXPLAIN_BUNDLE" in result.stderr
