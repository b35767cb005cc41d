"""Analyse: upload one or many cell images, then watch their result cards fill in."""

from __future__ import annotations

import functools
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.analysis import run_batch
from console.archives import BadArchive, TooManyMembers, is_zip, read_zip
from console.explain import CHOICE_FIELDS, BadChoice, ExplainChoices, card_choices, explain_choices
from console.images import RejectedUpload, check_upload, probe_upload, safe_name
from console.settings import ConsoleSettings
from console.store import Filters, Upload
from console.web import check_csrf, console_of, redirect, render, require
from hemascope.client.stubs import analysis_pb2

FORM_OVERHEAD = 64 * 1024


def _form_context(
    settings: ConsoleSettings,
    errors: list[str],
    choices: ExplainChoices | None,
    picked: dict[str, str] | None = None,
) -> dict[str, object]:
    return {
        "errors": errors,
        "max_files": settings.max_files,
        "max_mb": settings.max_upload_bytes / 1e6,
        "max_batch_mb": settings.max_batch_bytes / 2**20,
        "choices": choices,
        "picked": picked or {},
    }


async def analyse_form(request: Request) -> Response:
    session = require(request, "reviewer")
    console = console_of(request)
    choices = await explain_choices(console, session)
    return render(request, "analyse.html", _form_context(console.settings, [], choices))


async def _read(upload: UploadFile, settings: ConsoleSettings) -> tuple[str, bytes]:
    """An uploaded file's name and bytes: an image up to one byte over the per-image limit, a zip (known
    by its first bytes) up to one byte over the upload limit."""
    head = await upload.read(4)
    await upload.seek(0)
    limit = settings.max_batch_bytes if is_zip(head) else settings.max_upload_bytes
    return upload.filename or "image", await upload.read(limit + 1)


async def analyse(request: Request) -> Response:
    return await _accept(request, "cell")


async def analyse_smears(request: Request) -> Response:
    return await _accept(request, "smear")


async def _accept(request: Request, kind: str) -> Response:
    """Checks an upload's headers, stores it, starts its analysis (which decodes and converts each image
    just before sending it to the gateway) and sends the browser to the batch page."""
    session = require(request, "reviewer")
    console = console_of(request)
    settings = console.settings
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "uploads need a Content-Length")
    if int(length) > settings.max_batch_bytes + FORM_OVERHEAD:
        raise HTTPException(
            413, f"the upload is larger than the {settings.max_batch_bytes // 2**20} MiB the console accepts"
        )
    async with request.form(max_files=settings.max_files, max_fields=8, max_part_size=4096) as form:
        check_csrf(request, session, form)
        files = [f for f in form.getlist("images") if isinstance(f, UploadFile)]
        explain = form.get("explain") == "on"
        detect = form.get("detect") == "on"
        wanted = {name: str(form.get(name) or "") for name in CHOICE_FIELDS}
        received = [await _read(f, settings) for f in files]
    if kind == "smear":  # smears are detected only: images, one file each
        received = [(name, data[: settings.max_upload_bytes + 1]) for name, data in received]
        uploads, errors = await anyio.to_thread.run_sync(
            functools.partial(probe_all, received, settings, archives=False)
        )
    else:
        uploads, errors = await anyio.to_thread.run_sync(probe_all, received, settings)
    if not files:
        errors.append("Choose at least one image.")
    choices, choice, status = None, None, 400
    if kind == "cell":
        choices = await explain_choices(console, session)
        try:
            choice = choices.check(**wanted)
        except BadChoice as exc:
            errors.append(str(exc))
            status = exc.status
    if errors:
        if kind == "smear":
            return _smears(request, errors, 400)
        context = _form_context(settings, errors, choices, wanted)
        return render(request, "analyse.html", context, status)
    assert session.user is not None and session.api_key is not None
    batch_id, ids = await anyio.to_thread.run_sync(
        console.store.create_batch, session.user.name, uploads, kind
    )
    if kind == "smear":
        options = analysis_pb2.AnalyzeOptions(detect=True, skip_classification=True)
    else:
        options = analysis_pb2.AnalyzeOptions(explain=explain and settings.explain, detect=detect)
        if options.explain and choice is not None:
            choice.apply(options)
    convert = functools.partial(
        check_upload, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels
    )
    client = console.client_factory(session.api_key)
    console.runner.start(
        run_batch(console.store, client, ids, options, settings.gateway_timeout_s, convert),
        key=session.api_key,
    )
    return redirect(f"/batches/{batch_id}")


def probe_all(
    received: list[tuple[str, bytes]], settings: ConsoleSettings, archives: bool = True
) -> tuple[list[Upload], list[str]]:
    """The uploads as their headers describe them and what is wrong with the others (nothing is decoded
    here: the batch's pipeline decodes and converts each image just before sending it). With
    ``archives``, a zip (known by its bytes) stands for its images: each member is one upload named by its
    path in the archive, all of them counted against the upload's file and byte limits (see
    ``console.archives``)."""
    max_bytes, max_pixels = settings.max_upload_bytes, settings.max_pixels
    plain = [(name, data) for name, data in received if not (archives and is_zip(data))]
    room = settings.max_files - len(plain)  # images the zips may add
    budget = settings.max_batch_bytes - sum(len(data) for _, data in plain)  # bytes they may decompress to
    uploads, errors = [], []
    for filename, data in received:
        if not (archives and is_zip(data)):
            try:
                uploads.append(probe_upload(filename, data, max_bytes, max_pixels))
            except RejectedUpload as exc:
                errors.append(str(exc))
            continue
        label = safe_name(filename)
        if len(data) > settings.max_batch_bytes:
            errors.append(
                f"{label}: {len(data)} bytes is over the upload limit of {settings.max_batch_bytes}"
            )
            continue
        try:
            members, problems = read_zip(
                data, max_members=max(0, room), max_member_bytes=max_bytes, max_total_bytes=max(0, budget)
            )
        except TooManyMembers as exc:
            others = settings.max_files - room
            besides = f" besides the {others} other images of this upload" if others else ""
            errors.append(
                f"{label}: it holds {exc.count} files{besides}; one upload may have {settings.max_files}"
            )
            continue
        except BadArchive as exc:
            errors.append(f"{label}: {exc}")
            continue
        errors += [f"{label}: {problem}" for problem in problems]
        if not members and not problems:
            errors.append(f"{label}: it holds no images")
        room -= len(members)
        budget -= sum(len(member.data) for member in members)
        for member in members:
            try:
                uploads.append(probe_upload(member.name, member.data, max_bytes, max_pixels, member=True))
            except RejectedUpload as exc:
                errors.append(f"{label}: {exc}")
    return uploads, errors


def _batch_context(request: Request, batch_id: int) -> dict[str, Any]:
    store = console_of(request).store
    batch = store.batch(batch_id)
    if batch is None:
        raise HTTPException(404, "no such batch")
    items = store.batch_analyses(batch_id)
    finished = sum(1 for item in items if item["status"] != "pending")
    return {"batch": batch, "items": items, "finished": finished, "total": len(items)}


async def _cards(request: Request, template: str) -> Response:
    session = require(request)
    context = await anyio.to_thread.run_sync(_batch_context, request, request.path_params["batch_id"])
    choices = await card_choices(console_of(request), session, context["items"])
    return render(request, template, context | {"choices": choices})


async def batch_page(request: Request) -> Response:
    return await _cards(request, "batch.html")


async def batch_cards(request: Request) -> Response:
    return await _cards(request, "_batch_cards.html")


def _smears(request: Request, errors: list[str], status: int = 200) -> Response:
    """The smear form, the smear shown (``?show=<id>``, else the newest analysed one) with its white
    cells to classify, and every smear."""
    settings = console_of(request).settings
    store = console_of(request).store
    rows = store.search(Filters(kind="smear"), limit=200)
    wanted = request.query_params.get("show", "")
    if wanted and not wanted.isdigit():
        raise HTTPException(400, "show must be a smear's number")
    shown = store.get(int(wanted)) if wanted else next((r for r in rows if r["status"] == "done"), None)
    if wanted and (shown is None or shown["kind"] != "smear"):
        raise HTTPException(404, "no such smear")
    context = {
        "errors": errors,
        "rows": rows,
        "shown": shown,
        "max_files": settings.max_files,
        "max_mb": settings.max_upload_bytes / 1e6,
    }
    return render(request, "smears.html", context, status)


def smears_page(request: Request) -> Response:
    require(request)
    return _smears(request, [])


routes = [
    Route("/analyse", analyse_form, methods=["GET"]),
    Route("/analyse", analyse, methods=["POST"]),
    Route("/smears", smears_page, methods=["GET"]),
    Route("/smears", analyse_smears, methods=["POST"]),
    Route("/batches/{batch_id:int}", batch_page, methods=["GET"]),
    Route("/batches/{batch_id:int}/cards", batch_cards, methods=["GET"]),
]
