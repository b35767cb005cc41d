"""Console benchmark: a batch through the console against ``hemascope analyze``, and a large gallery.

Run: ``.venv/bin/python bench/console.py [--images N] [--gallery M] [--rounds R]``.

1. **batch** -- ``hemascope up``'s processes (every service and the gateway, API keys required, the
   feature service's embedding cache and decode memo off so that neither run profits from the other) and
   the console (uvicorn in this process, SQLite store). The same N cell images (bloodcells-5class val and
   jhu-cellavision, round robin over their classes) go (a) through ``hemascope analyze --json`` (a child
   process; first result = its first line) and (b) through the console as a browser would: log in with a
   key from the users file, upload every image in one POST of the analyse form (with its CSRF token), then
   poll the batch's progress fragment every 50 ms until every card is finished. Time to first result and
   to all results from the start of each; target: console/analyze <= 1.2x. A few other images go through
   both first (warm-up: connections, lazy loads).
2. **gallery** -- a fresh store seeded through ``ResultStore`` with M analyses (default 1000) copied from
   the batch's results (their images, thumbnails and reports; every tenth reviewed), then the gallery, the
   results table, a filtered gallery and the gallery's last page requested R times in process
   (Starlette's TestClient, no network): best and median time per page; target: < 1 s.

CPU shares per phase: bench = this process (the console and its client), stack = the five service
processes, cli = ``hemascope analyze``, foreign = everything else (>10%: disturbed). The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from benchlib.cpu import DISTURBED_FOREIGN_PCT
from benchlib.machine import machine_at_end, machine_info, machine_line
from benchlib.service import hemascope_command
from benchlib.table import disturbed_warning
from gateway_load import run_stack, stack_snapshot
from starlette.testclient import TestClient

from console.app import create_app
from console.settings import ConsoleSettings
from console.store import Filters, ResultStore, Upload, make_engine
from console.users import add_user
from gateway.auth import add_key
from hemascope.data import REPO_ROOT, shared_data_dir

BUNDLE = REPO_ROOT / "models" / "bloodcells-5class"
WARMUP_IMAGES = 4
POLL_S = 0.05
COUNT = re.compile(r"(\d+) of (\d+) analysed")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
STACK_ENV = {
    "HEMASCOPE_FEATURE_MEMORY_CACHE_ENTRIES": "0",
    "HEMASCOPE_FEATURE_DECODE_MEMO_ENTRIES": "0",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=100, help="images in the batch (<= 200)")
    parser.add_argument("--gallery", type=int, default=1000, help="analyses in the seeded gallery store")
    parser.add_argument("--rounds", type=int, default=7, help="requests per gallery page")
    return parser.parse_args(argv)


def pick_images(count: int) -> list[Path]:
    """``count`` images, round robin over the classes of bloodcells-5class val and jhu-cellavision."""
    data = shared_data_dir()
    folders = sorted((data / "bloodcells-5class" / "val").iterdir()) + sorted(
        p for p in (data / "jhu-cellavision").iterdir() if p.is_dir()
    )
    lists = [
        sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for folder in folders
    ]
    picked: list[Path] = []
    index = 0
    while len(picked) < count:
        if all(index >= len(files) for files in lists):
            raise RuntimeError(f"only {len(picked)} images found, {count} wanted")
        picked.extend(files[index] for files in lists if index < len(files))
        index += 1
    return picked[:count]


@dataclass
class Timing:
    first_s: float
    all_s: float
    failed: int
    cpu: dict[str, float]


class Meter:
    """CPU shares of one phase: this process, the stack, child processes, everything else."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = pids
        self.before = stack_snapshot(pids)
        self.children = _children_s()

    def shares(self) -> dict[str, float]:
        after = stack_snapshot(self.pids)
        capacity = max(after.wall - self.before.wall, 1e-9) * len(os.sched_getaffinity(0))
        own = after.own_s - self.before.own_s
        stack = after.server_s - self.before.server_s
        cli = _children_s() - self.children
        foreign = max(0.0, after.machine_busy_s - self.before.machine_busy_s - own - stack - cli)
        return {
            name: round(100 * value / capacity, 1)
            for name, value in (("bench", own), ("stack", stack), ("cli", cli), ("foreign", foreign))
        }


def _children_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def console_server(settings: ConsoleSettings) -> Iterator[str]:
    """The console under uvicorn in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def csrf(client: httpx.Client | TestClient, page: str) -> str:
    found = CSRF.search(client.get(page).text)
    if found is None:
        raise RuntimeError(f"no CSRF token on {page}")
    return found.group(1)


def log_in(client: httpx.Client | TestClient, key: str) -> None:
    response = client.post("/login", data={"api_key": key, "csrf_token": csrf(client, "/login")})
    if response.status_code != 303:
        raise RuntimeError(f"login refused: {response.status_code} {response.text[:200]}")


def through_console(client: httpx.Client, images: Sequence[Path], pids: Sequence[int]) -> tuple[Timing, int]:
    """One upload of ``images``, then the progress fragment polled until every card is finished."""
    token = csrf(client, "/analyse")
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in images]
    meter = Meter(pids)
    start = time.perf_counter()
    response = client.post("/analyse", data={"csrf_token": token}, files=files)
    if response.status_code != 303:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text[:300]}")
    batch = int(response.headers["location"].rsplit("/", 1)[1])
    first = None
    while True:
        page = client.get(f"/batches/{batch}/cards").text
        found = COUNT.search(page)
        if found is None:
            raise RuntimeError("no progress on the batch page")
        finished, total = int(found.group(1)), int(found.group(2))
        now = time.perf_counter() - start
        if finished and first is None:
            first = now
        if finished == total:
            failed = page.count("status-failed")
            return Timing(first or now, now, failed, meter.shares()), batch
        time.sleep(POLL_S)


def through_cli(address: str, key: str, images: Sequence[Path], pids: Sequence[int]) -> Timing:
    """``hemascope analyze --json`` over ``images``; the first result is its first line."""
    command = [*hemascope_command(), "analyze", "--address", address, "--json", *map(str, images)]
    meter = Meter(pids)
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HEMASCOPE_API_KEY": key}
    )
    assert proc.stdout is not None
    first = None
    failed = 0
    for line in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
        failed += int("error" in json.loads(line))
    code = proc.wait()
    elapsed = time.perf_counter() - start
    if code not in (0, 3):
        assert proc.stderr is not None
        raise RuntimeError(f"hemascope analyze exited {code}: {proc.stderr.read().decode()[-500:]}")
    return Timing(first or elapsed, elapsed, failed, meter.shares())


def seed_gallery(source: ResultStore, target: ResultStore, count: int) -> None:
    """``count`` analyses in ``target``, copied (images, thumbnails, results) from ``source``'s finished
    ones, in batches of 100; every tenth reviewed."""
    rows = [r for r in source.search(Filters(), limit=10_000) if r["status"] == "done"]
    if not rows:
        raise RuntimeError("no finished analysis to copy into the gallery")
    pictures = {
        r["id"]: (
            source.image(r["id"]),
            source.blob(r["id"], "display_png"),
            source.blob(r["id"], "thumb_png"),
        )
        for r in rows
    }
    kept = ("status", "label", "confidence", "agreement", "malignant_probability", "malignant", "refer")
    made = 0
    while made < count:
        chunk = [rows[(made + i) % len(rows)] for i in range(min(100, count - made))]
        uploads = []
        for row in chunk:
            image, display, thumb = pictures[row["id"]]
            uploads.append(
                Upload(
                    row["filename"],
                    image,
                    row["image_format"],
                    row["width"],
                    row["height"],
                    display or b"",
                    thumb or b"",
                )
            )
        _, ids = target.create_batch("bench", uploads)
        for analysis_id, row in zip(ids, chunk, strict=True):
            values = {k: row[k] for k in kept} | {
                "site_status": row["site_status"],
                "content_hash": row["content_hash"],
                "report": json.dumps(row["report"]),
            }
            target.record_result(analysis_id, values)
            if analysis_id % 10 == 0 and row["label"]:
                target.review(analysis_id, "bench", row["label"], "")
        made += len(chunk)


def time_pages(client: TestClient, pages: Sequence[str], rounds: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for page in pages:
        samples = []
        size = 0
        for _ in range(rounds):
            start = time.perf_counter()
            response = client.get(page)
            samples.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"{page}: {response.status_code}")
            size = len(response.content)
        out[page] = {
            "best_ms": round(1000 * min(samples), 1),
            "p50_ms": round(1000 * statistics.median(samples), 1),
            "kb": round(size / 1024, 1),
        }
    return out


def gallery(
    settings: ConsoleSettings, folder: Path, key: str, pids: Sequence[int], args: argparse.Namespace
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Seeds a fresh store from the batch's results and times its listing pages; (figures, CPU shares)."""
    source = ResultStore(make_engine(settings.database_url))
    gallery_url = f"sqlite:///{folder / 'gallery.db'}"
    seed_gallery(source, ResultStore(make_engine(gallery_url)), args.gallery)
    label = (source.labels() or [""])[0]
    last = max(1, -(-args.gallery // 100))
    pages = ["/gallery", "/results", f"/gallery?label={label}&min_confidence=0.5", f"/gallery?page={last}"]
    meter = Meter(pids)
    with TestClient(create_app(settings.model_copy(update={"database_url": gallery_url}))) as browser:
        browser.follow_redirects = False
        log_in(browser, key)
        timed = time_pages(browser, pages, args.rounds)
    return timed, meter.shares()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    print(machine_line(machine), f"load {machine['loadavg_1m_start']}", flush=True)
    images = pick_images(args.images + 2 * WARMUP_IMAGES)
    warm_cli, warm_console, batch = (
        images[:WARMUP_IMAGES],
        images[WARMUP_IMAGES : 2 * WARMUP_IMAGES],
        images[2 * WARMUP_IMAGES :],
    )
    result: dict[str, Any] = {"images": len(batch), "gallery": args.gallery, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        folder = Path(tmp)
        keys_file, users_file = folder / "gateway-keys.jsonl", folder / "console-users.jsonl"
        key = add_key(keys_file, "console-bench")
        add_user(users_file, "bench", "reviewer", key)
        env = STACK_ENV | {"HEMASCOPE_GATEWAY_API_KEYS_FILE": str(keys_file)}
        print("starting the stack ...", flush=True)
        with run_stack(BUNDLE, folder / "stack.log", env) as (address, pids):
            fields: dict[str, Any] = {
                "gateway_address": address,
                "users_file": users_file,
                "database_url": f"sqlite:///{folder / 'batch.db'}",
            }
            settings = ConsoleSettings(**fields)
            with console_server(settings) as url, httpx.Client(base_url=url, timeout=300) as client:
                log_in(client, key)
                through_cli(address, key, warm_cli, pids)
                through_console(client, warm_console, pids)
                cli = through_cli(address, key, batch, pids)
                console, _ = through_console(client, batch, pids)
            ratio_first = console.first_s / cli.first_s
            ratio_all = console.all_s / cli.all_s
            print(
                f"batch of {len(batch)} images   first result   all results   failed   "
                "CPU bench/stack/cli/foreign %"
            )
            for name, timing in (("hemascope analyze", cli), ("console", console)):
                cpu = "/".join(str(v) for v in timing.cpu.values())
                print(f"{name:22} {timing.first_s:10.2f} s {timing.all_s:11.2f} s {timing.failed:8}   {cpu}")
            print(
                f"console/analyze: first {ratio_first:.2f}x, all {ratio_all:.2f}x (target <= 1.2x)",
                flush=True,
            )
            result["batch"] = {
                "analyze": vars(cli),
                "console": vars(console),
                "ratio_first": round(ratio_first, 3),
                "ratio_all": round(ratio_all, 3),
            }
            timed, gallery_cpu = gallery(settings, folder, key, pids, args)
    print(f"gallery of {args.gallery} analyses, {args.rounds} rounds   best      p50      size")
    for page, figures in timed.items():
        print(f"{page:48} {figures['best_ms']:7.1f} ms {figures['p50_ms']:7.1f} ms {figures['kb']:7.1f} KiB")
    print("CPU bench/stack/cli/foreign %:", "/".join(str(v) for v in gallery_cpu.values()))
    result["gallery_pages"] = timed
    result["gallery_cpu"] = gallery_cpu
    foreign = max(console.cpu["foreign"], cli.cpu["foreign"], gallery_cpu["foreign"])
    if foreign > DISTURBED_FOREIGN_PCT:
        print(disturbed_warning(foreign))
    result["machine"] = machine_at_end(machine)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
