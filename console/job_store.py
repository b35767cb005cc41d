"""The Jobs page's rows in the console store: jobs with their state, and the audit log of who started or
cancelled which job and who promoted (or tried to promote) which job's bundle to serving. State changes are
conditional updates, so two actors (the queue finishing a job, an admin cancelling it) never both win."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from console.store import audit, jobs, now

FINISHED = ("succeeded", "failed", "cancelled")
STATES = ("queued", "running", *FINISHED)
INTERRUPTED = "interrupted: the console stopped while the job ran"


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str
    created: datetime
    created_by: str
    started: datetime | None
    finished: datetime | None
    choices: dict[str, Any]
    argv: list[str]
    exit_code: int | None
    error: str

    @property
    def done(self) -> bool:
        return self.state in FINISHED


def _job(row: RowMapping) -> Job:
    values = dict(row)
    values["choices"] = json.loads(values["choices"] or "{}")
    values["argv"] = json.loads(values["argv"] or "[]")
    return Job(**values)


class JobStore:
    """Reads and writes jobs and the audit log."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, kind: str, user: str, choices: dict[str, Any], argv: list[str]) -> int:
        """Stores a queued job and audits its start; returns its id."""
        with self.engine.begin() as conn:
            job_id = int(
                conn.execute(
                    jobs.insert().values(
                        kind=kind,
                        state="queued",
                        created=now(),
                        created_by=user,
                        choices=json.dumps(choices),
                        argv=json.dumps(argv),
                        error="",
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )
            detail = f"{kind}: " + ", ".join(f"{k}={v}" for k, v in sorted(choices.items()))
            self._audit(conn, user, "job_started", job_id, detail)
        return job_id

    def get(self, job_id: int) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return _job(row) if row is not None else None

    def recent(self, limit: int = 100) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)).mappings()
            return [_job(row) for row in rows]

    def claim_next(self) -> Job | None:
        """Marks the oldest queued job running and returns it; None when none is queued."""
        with self.engine.begin() as conn:
            while True:
                job_id = conn.execute(
                    sa.select(sa.func.min(jobs.c.id)).where(jobs.c.state == "queued")
                ).scalar()
                if job_id is None:
                    return None
                claimed = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, jobs.c.state == "queued")
                    .values(state="running", started=now())
                ).rowcount
                if claimed:
                    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one()
                    return _job(row)

    def finish(self, job_id: int, state: str, exit_code: int | None, error: str = "") -> bool:
        """Ends a running job (``succeeded``, ``failed`` or ``cancelled``); False when it was not running."""
        if state not in FINISHED:
            raise ValueError(state)
        with self.engine.begin() as conn:
            changed = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == "running")
                .values(state=state, finished=now(), exit_code=exit_code, error=error)
            ).rowcount
        return bool(changed)

    def cancel(self, job_id: int, user: str) -> str | None:
        """Cancels a job as ``user``: a queued one is taken off the queue here (``"dequeued"``); a running
        one is only audited (``"running"``: the queue must stop its process). None when it had finished."""
        with self.engine.begin() as conn:
            dequeued = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="cancelled", finished=now(), error=f"cancelled by {user} before it started")
            ).rowcount
            if dequeued:
                self._audit(conn, user, "job_cancelled", job_id, "taken off the queue")
                return "dequeued"
            state = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
            if state != "running":
                return None
            self._audit(conn, user, "job_cancelled", job_id, "terminated while running")
            return "running"

    def fail_interrupted(self) -> int:
        """Marks jobs left running by an earlier run of the console as failed; returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update()
                .where(jobs.c.state == "running")
                .values(state="failed", finished=now(), error=INTERRUPTED)
            )
        return int(result.rowcount or 0)

    def record(self, actor: str, action: str, job_id: int | None, detail: str) -> None:
        """One audit row (e.g. a bundle promotion and its outcome)."""
        with self.engine.begin() as conn:
            self._audit(conn, actor, action, job_id, detail)

    def audit_log(self, limit: int = 50, job_id: int | None = None) -> list[RowMapping]:
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(audit.c.job_id == job_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).mappings())

    @staticmethod
    def _audit(conn: sa.Connection, actor: str, action: str, job_id: int | None, detail: str) -> None:
        conn.execute(
            audit.insert().values(created=now(), actor=actor, action=action, job_id=job_id, detail=detail)
        )
