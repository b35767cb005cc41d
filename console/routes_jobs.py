"""Jobs (admin only): start a training, evaluation or site validation on an allow-listed dataset, watch its
log while it runs, cancel it, and read its report when it is done (a training's bundle can then be promoted
to serving: :mod:`console.routes_promote`). Every start and cancel is audited."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from console.job_kinds import BACKBONES, KINDS, MODELS, Catalogue, JobRefused, plan_job
from console.job_store import Job
from console.jobs import LOG_NAME, STDOUT_NAMES, tail
from console.routes_promote import bundle_of
from console.web import check_csrf, console_of, redirect, render, require

REPORT_DIR = "report"
FIGURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.png")
MAX_REPORT_BYTES = 2 * 1024 * 1024


def catalogue_of(request: Request) -> Catalogue:
    settings = console_of(request).settings
    return Catalogue(settings.data_root, settings.bundles_dir, settings.jobs_dir)


def trained_ids(request: Request) -> list[int]:
    """Succeeded training jobs (their bundles may be evaluated, validated)."""
    jobs = console_of(request).jobs.store.recent(1000)
    return [j.id for j in jobs if j.kind == "train" and j.state == "succeeded"]


def _options(request: Request) -> dict[str, Any]:
    catalogue = catalogue_of(request)
    return {
        "kinds": KINDS,
        "datasets": catalogue.datasets(),
        "specs": catalogue.specs(),
        "bundles": list(catalogue.bundles(trained_ids(request))),
        "models": MODELS,
        "backbones": BACKBONES,
        "data_root": catalogue.data_root,
    }


async def _page(request: Request, errors: list[str], status: int = 200) -> Response:
    store = console_of(request).jobs.store
    context = await anyio.to_thread.run_sync(_options, request)
    context |= {
        "errors": errors,
        "jobs": await anyio.to_thread.run_sync(store.recent, 200),
        "audit": await anyio.to_thread.run_sync(store.audit_log, 50),
    }
    return render(request, "jobs.html", context, status)


async def jobs_page(request: Request) -> Response:
    require(request, "admin")
    return await _page(request, [])


async def start_job(request: Request) -> Response:
    session = require(request, "admin")
    console = console_of(request)
    async with request.form(max_files=0, max_fields=32, max_part_size=4096) as form:
        check_csrf(request, session, form)
        fields = {k: str(v) for k, v in form.items()}
        models = [str(m) for m in form.getlist("models")]
    try:
        plan = await anyio.to_thread.run_sync(
            plan_job, fields.get("kind", ""), fields, models, catalogue_of(request), trained_ids(request)
        )
    except JobRefused as exc:
        return await _page(request, [str(exc)], 400)
    assert session.user is not None
    job_id = await anyio.to_thread.run_sync(
        console.jobs.store.create, plan.kind, session.user.name, plan.choices, plan.argv
    )
    console.jobs.wake()
    return redirect(f"/jobs/{job_id}")


async def job_list(request: Request) -> Response:
    require(request, "admin")
    jobs = await anyio.to_thread.run_sync(console_of(request).jobs.store.recent, 200)
    return render(request, "_job_list.html", {"jobs": jobs, "kinds": KINDS})


def _job(request: Request) -> Job:
    job = console_of(request).jobs.store.get(request.path_params["job_id"])
    if job is None:
        raise HTTPException(404, "no such job")
    return job


def _markdown(job_id: int) -> MarkdownIt:
    """CommonMark with tables, raw HTML off (shown as text); pictures only from the job's own figures."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(renderer: RendererHTML, tokens: Any, idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        name = str(token.attrGet("src") or "").removeprefix("./")
        if not FIGURE.fullmatch(name):
            return ""  # a picture from elsewhere is left out
        token.attrSet("src", f"/jobs/{job_id}/figures/{name}")
        return renderer.image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    return md


def report_of(job: Job, folder: Path) -> dict[str, Any]:
    """What the job's command wrote: evaluate's metrics (JSON on stdout), or the markdown report of a
    training or site validation rendered to HTML."""
    stdout_name = STDOUT_NAMES.get(job.kind)
    if stdout_name is not None:
        lines = [line for line in tail(folder / stdout_name, MAX_REPORT_BYTES).splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            result = None
        return {"metrics": result["models"] if isinstance(result, dict) and "models" in result else None}
    report = folder / REPORT_DIR / "report.md"
    if not report.is_file() or report.stat().st_size > MAX_REPORT_BYTES:
        return {}
    return {"report_html": _markdown(job.id).render(report.read_text(encoding="utf-8", errors="replace"))}


def _detail(request: Request) -> dict[str, Any]:
    job = _job(request)
    folder = console_of(request).jobs.folder(job.id)
    context: dict[str, Any] = {"job": job, "log": tail(folder / LOG_NAME), "kinds": KINDS}
    if job.state == "succeeded" or (job.state == "failed" and job.kind == "validate"):
        context |= report_of(job, folder)  # a failed validation still reports which criteria failed
    return context


async def job_page(request: Request) -> Response:
    require(request, "admin")
    context = await anyio.to_thread.run_sync(_detail, request)
    store = console_of(request).jobs.store
    context["audit"] = await anyio.to_thread.run_sync(store.audit_log, 50, context["job"].id)
    jobs_dir = console_of(request).settings.jobs_dir
    context["bundle"] = await anyio.to_thread.run_sync(bundle_of, jobs_dir, context["job"])
    return render(request, "job.html", context)


async def job_status(request: Request) -> Response:
    require(request, "admin")
    return render(request, "_job_status.html", await anyio.to_thread.run_sync(_detail, request))


async def cancel_job(request: Request) -> Response:
    session = require(request, "admin")
    async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
        check_csrf(request, session, form)
    job = _job(request)
    assert session.user is not None
    await console_of(request).jobs.cancel(job.id, session.user.name)
    return redirect(f"/jobs/{job.id}")


async def job_figure(request: Request) -> Response:
    require(request, "admin")
    job = _job(request)
    name = request.path_params["name"]
    if not FIGURE.fullmatch(name):
        raise HTTPException(404, "no such figure")
    folder = (console_of(request).jobs.folder(job.id) / REPORT_DIR).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise HTTPException(404, "no such figure")
    return FileResponse(path, media_type="image/png")


routes = [
    Route("/jobs", jobs_page, methods=["GET"]),
    Route("/jobs", start_job, methods=["POST"]),
    Route("/jobs/list", job_list, methods=["GET"]),
    Route("/jobs/{job_id:int}", job_page, methods=["GET"]),
    Route("/jobs/{job_id:int}/status", job_status, methods=["GET"]),
    Route("/jobs/{job_id:int}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id:int}/figures/{name}", job_figure, methods=["GET"]),
]
