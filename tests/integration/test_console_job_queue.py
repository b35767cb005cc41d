"""The console's job queue with real subprocesses (tiny Python commands) on a real store (SQLite and
PostgreSQL): one job at a time to success or failure, cancelling a queued and a running job (SIGTERM, then
SIGKILL for one that ignores it), and a shutdown that records the running job as interrupted."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from console.job_store import INTERRUPTED, JobStore
from console.jobs import LOG_NAME, JobQueue, tail
from console.store import jobs, make_engine, metadata
from tests.console_fixtures import postgres_schema

PY = sys.executable
READY = "import signal, time, os; {setup}print('ready', os.getpid(), flush=True); time.sleep(600)"
SLEEPER = [PY, "-c", READY.format(setup="")]
STUBBORN = [PY, "-c", READY.format(setup="signal.signal(signal.SIGTERM, signal.SIG_IGN); ")]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'console.db'}")
        yield JobStore(engine)
        engine.dispose()
    else:
        with postgres_schema() as url:
            engine = make_engine(url)
            yield JobStore(engine)
            engine.dispose()


async def until(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Polls ``condition`` in the loop; fails naming ``what`` after ``limit_s`` (a hang guard only)."""
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {limit_s} s")


def logged(queue: JobQueue, job_id: int, text: str) -> Callable[[], bool]:
    return lambda: text in tail(queue.folder(job_id) / LOG_NAME)


def test_jobs_run_one_at_a_time_in_their_folders_to_success_or_failure(
    store: JobStore, tmp_path: Path
) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=5)
    first = store.create(
        "train", "ann", {"dataset": "lab"}, [PY, "-c", "import os; print('in', os.getcwd())"]
    )
    second = store.create("train", "ann", {}, [PY, "-c", "import sys; print('bad input'); sys.exit(3)"])
    third = store.create(
        "evaluate", "ann", {}, [PY, "-c", "import sys; print('{}'); print('note', file=sys.stderr)"]
    )

    stale = queue.folder(third)  # left by an earlier store whose ids this one reuses
    stale.mkdir(parents=True)
    (stale / "result.json").write_text('{"models": "stale"}')

    async def scenario() -> None:
        await queue.start()
        await until(lambda: all(store.get(j).done for j in (first, second, third)), "the three jobs")  # type: ignore[union-attr]
        await queue.stop()

    asyncio.run(scenario())
    done = {j: store.get(j) for j in (first, second, third)}
    a, b, c = (done[j] for j in (first, second, third))
    assert a is not None and b is not None and c is not None
    assert (a.state, a.exit_code, a.error) == ("succeeded", 0, "")
    assert f"in {(tmp_path / 'jobs' / str(first)).resolve()}" in tail(queue.folder(first) / LOG_NAME)
    assert (b.state, b.exit_code, b.error) == ("failed", 3, "exited with code 3")
    assert "bad input" in tail(queue.folder(second) / LOG_NAME)
    assert c.state == "succeeded"  # evaluate's stdout is its result, kept apart from the log
    assert (queue.folder(third) / "result.json").read_text() == "{}\n"
    (moved,) = (tmp_path / "jobs").glob(f"{third}-earlier-*")
    assert (moved / "result.json").read_text() == '{"models": "stale"}'
    assert tail(queue.folder(third) / LOG_NAME) == "note\n"
    assert a.finished is not None and b.started is not None and b.finished is not None
    assert c.started is not None
    assert a.finished <= b.started and b.finished <= c.started  # one at a time, oldest first
    assert [e["action"] for e in store.audit_log()] == ["job_started"] * 3
    assert store.audit_log(job_id=first)[0]["detail"] == "train: dataset=lab"


def test_a_queued_job_is_dropped_and_running_ones_are_terminated(store: JobStore, tmp_path: Path) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=0.5)
    stubborn = store.create("train", "ann", {}, STUBBORN)
    queued = store.create("train", "ann", {}, [PY, "-c", "print('never')"])
    polite = store.create("train", "ann", {}, SLEEPER)
    outcomes: list[str | None] = []

    async def scenario() -> None:
        await queue.start()
        await until(logged(queue, stubborn, "ready"), "the first job's start")
        assert [store.get(j).state for j in (stubborn, queued, polite)] == ["running", "queued", "queued"]  # type: ignore[union-attr]
        outcomes.append(await queue.cancel(queued, "bob"))
        outcomes.append(await queue.cancel(stubborn, "bob"))  # ignores SIGTERM: killed after the grace
        await until(logged(queue, polite, "ready"), "the third job's start")
        outcomes.append(await queue.cancel(polite, "bob"))  # stops at SIGTERM
        await until(lambda: store.get(polite).done, "the third job's end")  # type: ignore[union-attr]
        outcomes.append(await queue.cancel(polite, "bob"))  # already over: nothing to do
        await queue.stop()

    asyncio.run(scenario())
    assert outcomes == ["dequeued", "running", "running", None]
    jobs = {j: store.get(j) for j in (stubborn, queued, polite)}
    assert all(job is not None and job.state == "cancelled" for job in jobs.values())
    assert jobs[stubborn].exit_code == -9 and jobs[polite].exit_code == -15  # type: ignore[union-attr]
    assert jobs[queued].started is None and not queue.folder(queued).exists()  # type: ignore[union-attr]
    cancels = [
        (e["actor"], e["job_id"], e["detail"]) for e in store.audit_log() if e["action"] == "job_cancelled"
    ]
    assert sorted(cancels) == sorted(
        [
            ("bob", queued, "taken off the queue"),
            ("bob", stubborn, "terminated while running"),
            ("bob", polite, "terminated while running"),
        ]
    )


def test_stopping_the_console_interrupts_the_running_job_and_keeps_the_queue(
    store: JobStore, tmp_path: Path
) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=5)
    running = store.create("train", "ann", {}, SLEEPER)
    waiting = store.create("train", "ann", {}, [PY, "-c", "print('later')"])

    async def scenario() -> None:
        await queue.start()
        await until(logged(queue, running, "ready"), "the job's start")
        await queue.stop()

    asyncio.run(scenario())
    job = store.get(running)
    assert job is not None and (job.state, job.error) == ("failed", INTERRUPTED)
    pid = int(tail(queue.folder(running) / LOG_NAME).split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert store.get(waiting).state == "queued"  # type: ignore[union-attr]

    again = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=5)

    async def restarted() -> None:
        await again.start()
        await until(lambda: store.get(waiting).done, "the queued job after the restart")  # type: ignore[union-attr]
        await again.stop()

    asyncio.run(restarted())
    assert store.get(waiting).state == "succeeded"  # type: ignore[union-attr]


def test_a_job_left_running_by_a_stopped_console_is_failed_at_start_up(store: JobStore) -> None:
    left = store.create("train", "ann", {}, SLEEPER)
    assert store.claim_next() is not None  # running when that console died
    assert store.fail_interrupted() == 1
    job = store.get(left)
    assert job is not None and (job.state, job.error) == ("failed", INTERRUPTED) and job.finished is not None


def test_a_queue_of_concurrency_two_runs_two_jobs_at_once(store: JobStore, tmp_path: Path) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=2, grace_s=5)
    jobs = [store.create("train", "ann", {}, SLEEPER) for _ in range(3)]
    states: list[str] = []

    async def scenario() -> None:
        await queue.start()
        await until(lambda: all(logged(queue, j, "ready")() for j in jobs[:2]), "two jobs running together")
        states.extend(store.get(j).state for j in jobs)  # type: ignore[union-attr]
        for job_id in jobs:
            await queue.cancel(job_id, "ann")
        await until(lambda: all(store.get(j).done for j in jobs), "the cancels")  # type: ignore[union-attr]
        await queue.stop()

    asyncio.run(scenario())
    assert states == ["running", "running", "queued"]


def test_the_queue_carries_on_once_the_store_can_be_read_again(store: JobStore, tmp_path: Path) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=5)
    jobs.drop(store.engine)  # the queue's first look fails

    async def scenario() -> None:
        await queue.start()
        await until(lambda: queue.unreadable > 0, "the failed look")
        await asyncio.to_thread(metadata.create_all, store.engine)
        job_id = store.create("train", "ann", {}, [PY, "-c", "print('after')"])
        queue.wake()
        await until(lambda: store.get(job_id).done, "the job after the store came back", 30)  # type: ignore[union-attr]
        await queue.stop()

    asyncio.run(scenario())
    assert [j.state for j in store.recent()] == ["succeeded"]


def test_nested_lifespans_share_one_dispatcher_stopped_by_the_last(store: JobStore, tmp_path: Path) -> None:
    queue = JobQueue(store, tmp_path / "jobs", concurrency=1, grace_s=5)

    async def scenario() -> None:
        await queue.start()
        first = queue._dispatcher
        await queue.start()  # a second lifespan of the same app
        assert queue._dispatcher is first
        await queue.stop()
        assert first is not None and not first.done()  # the first lifespan still serves
        await queue.stop()
        assert first.done()

    asyncio.run(scenario())
