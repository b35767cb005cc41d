"""Promoting a training job's bundle to serving (admin only): a confirmation page where the admin types the
bundle's name, then the gateway's ``PromoteBundle`` through ``hemascope.client`` with the admin's own gateway
key (the gateway also requires that key to have its admin role). The outcome, the version now serving or
the refusal, is shown and written to the audit log; a submission without the right confirmation calls
nothing and audits nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.job_kinds import BUNDLE_MANIFEST, JobRefused, inside
from console.job_store import Job
from console.web import check_csrf, console_of, render, require
from hemascope.client import HemascopeClientError

CONFIRM_FIELD = "confirm_name"
PROMOTED = "bundle_promoted"
REFUSED = "bundle_promotion_refused"
#: How a refusal's status code is shown (the gateway's own codes, see admin.proto).
HTTP_STATUS = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 403, "UNAVAILABLE": 503}
REFUSED_STATUS = 409


@dataclass(frozen=True)
class Candidate:
    """A finished training job's bundle that may be promoted."""

    job: Job
    name: str
    """The name the Jobs page offers it under (``job-<id>``), which the admin types to confirm."""
    path: Path
    version: str
    """``bundle_version`` from its manifest (empty when the manifest does not say)."""


def bundle_of(jobs_dir: Path, job: Job) -> Candidate | None:
    """The bundle a succeeded training job wrote, when it is there; None for any other job."""
    if job.kind != "train" or job.state != "succeeded":
        return None
    try:
        path = inside(jobs_dir, f"{job.id}/bundle")
    except JobRefused:
        return None
    manifest = path / BUNDLE_MANIFEST
    if not manifest.is_file():
        return None
    try:
        version = str(json.loads(manifest.read_text(encoding="utf-8")).get("bundle_version", ""))
    except (OSError, ValueError, AttributeError):
        version = ""
    return Candidate(job, f"job-{job.id}", path, version)


def _candidate(request: Request) -> Candidate:
    console = console_of(request)
    job = console.jobs.store.get(request.path_params["job_id"])
    if job is None:
        raise HTTPException(404, "no such job")
    candidate = bundle_of(console.settings.jobs_dir, job)
    if candidate is None:
        raise HTTPException(404, "this job has no bundle to promote: only a succeeded training job has one")
    return candidate


def _page(request: Request, candidate: Candidate, status: int = 200, **context: Any) -> Response:
    return render(request, "promote.html", {"c": candidate, "field": CONFIRM_FIELD} | context, status)


async def confirm_page(request: Request) -> Response:
    require(request, "admin")
    candidate = await anyio.to_thread.run_sync(_candidate, request)
    return _page(request, candidate)


async def promote(request: Request) -> Response:
    session = require(request, "admin")
    async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
        check_csrf(request, session, form)
        typed = str(form.get(CONFIRM_FIELD) or "").strip()
    candidate = await anyio.to_thread.run_sync(_candidate, request)
    if typed != candidate.name:
        problem = f"Type {candidate.name} to confirm; nothing was promoted."
        return _page(request, candidate, 400, errors=[problem])
    console = console_of(request)
    assert session.user is not None and session.api_key is not None
    store, actor = console.jobs.store, session.user.name
    client = console.client_factory(session.api_key)
    try:
        reply = await client.promote_bundle(str(candidate.path), timeout=console.settings.promote_timeout_s)
    except HemascopeClientError as exc:
        detail = f"{candidate.name}: refused by the gateway: {exc.code.name} ({exc.reason}): {exc.message}"
        await anyio.to_thread.run_sync(store.record, actor, REFUSED, candidate.job.id, detail[:2000])
        status = HTTP_STATUS.get(exc.code.name, REFUSED_STATUS)
        return _page(request, candidate, status, refused=exc)
    finally:
        await client.close()
    detail = (
        f"{candidate.name}: bundle {reply.bundle_version} now serving "
        f"(was {reply.previous_version or 'none'}; {reply.model_count} models)"
    )
    await anyio.to_thread.run_sync(store.record, actor, PROMOTED, candidate.job.id, detail)
    return _page(request, candidate, promoted=reply)


routes = [
    Route("/jobs/{job_id:int}/promote", confirm_page, methods=["GET"]),
    Route("/jobs/{job_id:int}/promote", promote, methods=["POST"]),
]
