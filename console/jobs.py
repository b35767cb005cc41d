"""The job queue: jobs run one at a time (or ``concurrency`` at once) as subprocesses of the event loop,
oldest first, each in its own folder under the jobs directory with its log (stderr, and stdout unless the
kind prints a result there). The store holds every job's state, so the list survives a restart: queued jobs
run when the console starts again; a job that was running is marked failed (interrupted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from console.job_store import INTERRUPTED, Job, JobStore
from hemascope.data import REPO_ROOT
from hemascope.logs import get_logger

log = get_logger(__name__)

LOG_NAME = "log.txt"
STDOUT_NAMES: Mapping[str, str] = {"evaluate": "result.json"}
"""Kinds whose stdout is their result (kept apart from the log)."""
TAIL_BYTES = 64 * 1024
RETRY_S = 5.0
"""How soon the queue looks again after the store could not be read."""


def job_env() -> dict[str, str]:
    """The console's environment, unbuffered (the log fills as the job goes), importing this checkout's
    hemascope whatever folder the job runs in."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a text file (from a line start), or "" when it is missing."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return ""
    if len(data) == limit and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    return data.decode("utf-8", errors="replace")


class JobQueue:
    """Runs stored jobs in the background. ``start`` (at the application's start-up) and ``stop`` (at its
    shutdown) run in its event loop; so do ``wake`` and ``cancel``."""

    def __init__(self, store: JobStore, jobs_dir: Path, concurrency: int = 1, grace_s: float = 10.0) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.concurrency = concurrency
        self.grace_s = grace_s
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._cancelled: set[int] = set()
        self._killers: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        # Lifespans that started the queue and have not stopped it: one dispatcher serves them all, on the
        # loop of the first, and the last to stop (the first, when they nest) stops it.
        self._starts = 0
        self.unreadable = 0
        """How many times the queue could not read the store."""

    def folder(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    async def start(self) -> None:
        self._starts += 1
        if self._starts > 1:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def wake(self) -> None:
        """Looks at the queue again (after a job was stored)."""
        if self._wake is not None:
            self._wake.set()

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._start_waiting_jobs()
            except Exception as exc:  # the store cannot be read now: try again soon, or when woken
                self.unreadable += 1
                log.warning("console.job_queue_unreadable", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_S)
            else:
                await self._wake.wait()
            self._wake.clear()

    async def _start_waiting_jobs(self) -> None:
        while len(self._running) < self.concurrency and not self._stopping:
            job = await asyncio.to_thread(self.store.claim_next)
            if job is None:
                return
            self._running[job.id] = asyncio.get_running_loop().create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        state, code, error = "failed", None, ""
        try:
            state, code, error = await self._execute(job, self._fresh_folder(job.id))
        except Exception as exc:  # a job that cannot start (a missing program, a full disk) fails alone
            log.warning("console.job_error", job=job.id, error=type(exc).__name__)
            error = f"could not run: {exc}"
        finally:
            self._processes.pop(job.id, None)
            self._cancelled.discard(job.id)
            try:
                await asyncio.to_thread(self.store.finish, job.id, state, code, error)
            except Exception as exc:  # the store is down: the next start marks the job interrupted
                log.warning("console.job_not_recorded", job=job.id, error=type(exc).__name__)
            self._running.pop(job.id, None)
            self.wake()

    def _fresh_folder(self, job_id: int) -> Path:
        """The job's folder, empty: one left by an earlier store that reused this id is moved aside."""
        folder = self.folder(job_id)
        if folder.exists():
            folder.rename(folder.with_name(f"{job_id}-earlier-{time.time_ns()}"))
        folder.mkdir(parents=True)
        return folder

    async def _execute(self, job: Job, folder: Path) -> tuple[str, int | None, str]:
        if job.id in self._cancelled:
            return "cancelled", None, "cancelled before it started"
        stdout_name = STDOUT_NAMES.get(job.kind)
        with contextlib.ExitStack() as files:
            logfile = files.enter_context((folder / LOG_NAME).open("wb"))
            stdout: IO[bytes] = logfile
            stderr: IO[bytes] | int = asyncio.subprocess.STDOUT
            if stdout_name is not None:
                stdout, stderr = files.enter_context((folder / stdout_name).open("wb")), logfile
            process = await asyncio.create_subprocess_exec(
                *job.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=folder,
                env=job_env(),
                start_new_session=True,  # its own process group: a cancel stops its children too
            )
            self._processes[job.id] = process
            if job.id in self._cancelled:  # cancelled while it was being started
                self._terminate(process)
            code = await process.wait()
        if self._stopping:
            return "failed", code, INTERRUPTED
        if job.id in self._cancelled:
            return "cancelled", code, "cancelled while running"
        if code == 0:
            return "succeeded", code, ""
        reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return "failed", code, reason

    async def cancel(self, job_id: int, user: str) -> str | None:
        """Cancels a job for ``user``: a queued one leaves the queue, a running one gets SIGTERM, then
        SIGKILL after the grace period. Returns the store's outcome (None: it had already finished)."""
        outcome = await asyncio.to_thread(self.store.cancel, job_id, user)
        if outcome == "running":
            self._cancelled.add(job_id)
            process = self._processes.get(job_id)
            if process is not None:
                self._terminate(process)
        return outcome

    def _terminate(self, process: asyncio.subprocess.Process) -> None:
        task = asyncio.get_running_loop().create_task(self._stop_process(process))
        self._killers.add(task)
        task.add_done_callback(self._killers.discard)

    async def _stop_process(self, process: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stops the dispatcher and the running jobs (they are recorded as interrupted)."""
        self._starts = max(0, self._starts - 1)
        if self._starts:
            return
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for process in list(self._processes.values()):
            self._terminate(process)
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=self.grace_s + 5)
