"""Every command, run as a user would with wrong inputs: one line saying what was wrong and what to do,
the documented exit status (2: change the command; 1: something failed), and never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from hemascope.data import REPO_ROOT
from hemascope.supervisor import free_port

HEMASCOPE = Path(sys.executable).with_name("hemascope")
CELL = "samples/MYO_0004.jpg"
SMEAR = "samples/smear/BloodImage_00002.jpg"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    status: int
    says: tuple[str, ...]  # what the message must contain (what was wrong, what to do)
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    case: Case
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def cases(tmp: Path, taken: int, model_cache: Path) -> list[Case]:
    closed = str(free_port())  # nothing listens there
    non_empty = tmp / "non-empty"
    non_empty.mkdir()
    (non_empty / "notes.txt").write_text("mine")
    garbage = tmp / "bad.pth"
    garbage.write_bytes(b"\x80\x04not a checkpoint at all")
    text_file = tmp / "not-an-image.jpg"
    text_file.write_text("hello")
    cache = (("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache)),)
    return [
        Case(
            ("evaluate", "--bundle", "models/bloodcells-5class", "--data", "samples"), 2, ("one subfolder",)
        ),
        Case(("evaluate", "--bundle", "samples", "--data", "samples"), 2, ("manifest.json",)),
        Case(("embed", "--backbone", "vgg16", CELL), 2, ("unknown backbone 'vgg16'", "efficientnet_lite0")),
        Case(("embed", "--preprocessing", "fancy", CELL), 2, ("unknown preprocessing 'fancy'", "known:")),
        Case(("embed", "--backbone", "resnet50", CELL), 2, ("checkpoint",)),
        Case(
            ("embed", "--backbone", "resnet50", CELL),
            2,
            ("checkpoint", "bad.pth"),
            (("HEMASCOPE_FEATURE_RESNET50_CHECKPOINT", str(garbage)), *cache),
        ),
        Case(("export-backbone", "--backbone", "resnet50"), 2, ("HEMASCOPE_FEATURE_RESNET50_CHECKPOINT",)),
        Case(("data", "bccd-to-yolo", "--out", str(non_empty)), 2, ("not empty", "new or empty folder")),
        Case(("serve", "feature", "--port", str(taken), "--metrics-port", "0"), 2, ("in use", "--port")),
        Case(("serve", "feature", "--port", "99999"), 2, ("port",)),
        Case(
            ("serve", "classifier", "--bundle", "samples", "--port", "0", "--metrics-port", "0"),
            2,
            ("manifest",),
        ),
        Case(
            ("analyze", "--wait", "1", "--address", f"127.0.0.1:{closed}", CELL),
            1,
            ("hemascope up", "--wait"),
        ),
        Case(
            ("analyze", "--address", f"127.0.0.1:{closed}", CELL), 1, ("connection refused", "hemascope up")
        ),
        Case(("analyze", "--address", "a:b:c", CELL), 2, ("HOST:PORT",)),
        Case(("analyze", CELL, "--out", str(tmp / "out")), 2, ("--explain", "--detect")),
        Case(("analyze", CELL, "--no-classify"), 2, ("--detect",)),
        Case(("analyze", "no-such.jpg"), 2, ("no-such.jpg",)),
        Case(
            ("embed", "--address", f"127.0.0.1:{closed}", CELL), 1, ("hemascope serve feature", "--address")
        ),
        Case(("detect", "--address", f"127.0.0.1:{closed}", SMEAR), 1, ("hemascope serve detector",)),
        Case(("detect", SMEAR, "--conf", "2"), 2, ("--conf",)),
        Case(("detect", str(text_file)), 1, ("not-an-image.jpg",)),
        Case(
            ("explain", CELL, "--model", "nosuch", "--out", str(tmp / "o.png")),
            1,
            ("nosuch", "loading the bundle"),
        ),
        Case(
            ("train", "classifiers", "--data", "samples", "--out", str(tmp / "b"), "--models", "x"), 2, ("x",)
        ),
        Case(("health", f"127.0.0.1:{closed}"), 1, ("UNAVAILABLE",)),
        Case(("audit", "verify", str(tmp / "no-such-audit.jsonl")), 1, ("no-such-audit.jsonl",)),
        Case(("up", "--port", f"gateway={taken}"), 2, ("--free-ports",)),
        Case(("up", "--tls-cert", CELL), 2, ("--tls-key",)),
    ]


def run(case: Case) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k != "HEMASCOPE_FEATURE_RESNET50_CHECKPOINT"}
    env |= dict(case.env)
    done = subprocess.run(
        [str(HEMASCOPE), *case.argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )
    return Outcome(case, done.returncode, done.stdout, done.stderr)


def test_wrong_inputs_get_one_line_and_no_traceback(
    tmp_path: Path, taken_port: int, model_cache_dir: Path
) -> None:
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, cases(tmp_path, taken_port, model_cache_dir)))
    problems = []
    for outcome in outcomes:
        text = outcome.stdout + outcome.stderr
        name = " ".join(outcome.case.argv)
        if "Traceback" in text:
            problems.append(f"{name}: traceback:\n{text[-1500:]}")
        elif outcome.returncode != outcome.case.status:
            problems.append(
                f"{name}: exit {outcome.returncode}, expected {outcome.case.status}:\n{text[-800:]}"
            )
        else:
            missing = [phrase for phrase in outcome.case.says if phrase not in text]
            if missing:
                problems.append(f"{name}: message lacks {missing}:\n{text[-800:]}")
    assert not problems, "\n\n".join(problems)
