"""Explain again: a stored cell image sent to the gateway once more, asking for the explanation of a chosen
model, class and CAM method. The new overlay becomes the analysis's shown one, recorded with what it
explains, who asked for it and when; the stored classification stays as it is (the gateway classifies the
image again to explain it, and that answer is not kept)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.analysis import explanation_record
from console.explain import CHOICE_FIELDS, BadChoice, ExplainChoice, explain_choices
from console.routes_results import detail_context
from console.sessions import Session
from console.web import Console, check_csrf, console_of, redirect, render, require
from hemascope.client import HemascopeClientError
from hemascope.client.stubs import analysis_pb2

REFUSED = {3: "INVALID_ARGUMENT", 9: "FAILED_PRECONDITION", 11: "OUT_OF_RANGE"}
"""Status codes that refuse the request itself (400 here), for the call or its explanation part; any other
failure is the gateway's (502)."""


async def _explain(
    console: Console, session: Session, analysis_id: int, choice: ExplainChoice
) -> tuple[str, int]:
    """Asks the gateway for the explanation and stores it; ("", 200), or what went wrong and its status."""
    image = await anyio.to_thread.run_sync(console.store.image, analysis_id)
    assert session.api_key is not None and session.user is not None
    client = console.client_factory(session.api_key)
    options = choice.apply(analysis_pb2.AnalyzeOptions(explain=True))
    try:
        response = await client.analyze(image, options=options, timeout=console.settings.gateway_timeout_s)
    except HemascopeClientError as exc:
        status = 400 if exc.code.name in REFUSED.values() else 502
        return f"The gateway refused the explanation ({exc.code.name}): {exc}", status
    finally:
        await client.close()
    if not response.HasField("explanation"):
        failed = [p for p in response.parts if p.part == "explanation" and p.code != 0]
        if not failed:
            return "The gateway answered without an explanation.", 502
        why = failed[0].message or failed[0].reason
        status = 400 if failed[0].code in REFUSED else 502
        return f"The gateway did not explain the cell: {why}", status
    record = explanation_record(response.explanation) | {
        "by": session.user.name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    overlay = bytes(response.explanation.overlay_png)
    await anyio.to_thread.run_sync(console.store.record_explanation, analysis_id, record, overlay)
    return "", 200


async def explain_again(request: Request) -> Response:
    """Re-explains one analysed cell with the submitted choice. With htmx the answer is the card's picture
    (the new overlay and its caption, or what went wrong, always 200 so that htmx swaps it in); without,
    a redirect to the detail page, or the detail page saying what went wrong (400, 502 or 503)."""
    session = require(request, "reviewer")
    async with request.form(max_files=0, max_fields=8, max_part_size=4096) as form:
        check_csrf(request, session, form)
        wanted = {name: str(form.get(name) or "") for name in CHOICE_FIELDS}
    console = console_of(request)
    analysis_id = int(request.path_params["analysis_id"])
    row = await anyio.to_thread.run_sync(console.store.get, analysis_id)
    if row is None:
        raise HTTPException(404, "no such analysis")
    if row["kind"] != "cell" or row["status"] != "done":
        raise HTTPException(400, "only an analysed cell image can be explained")
    choices = await explain_choices(console, session)
    try:
        choice = choices.check(**wanted)
    except BadChoice as exc:
        problem, status = str(exc), exc.status
    else:
        problem, status = await _explain(console, session, analysis_id, choice)
    htmx = bool(request.headers.get("hx-request"))
    if not problem and not htmx:
        return redirect(f"/analyses/{analysis_id}")
    context: dict[str, Any] = {"choices": choices, "explain_problem": problem, "picked": wanted}
    if htmx:
        row = await anyio.to_thread.run_sync(console.store.get, analysis_id)
        return render(request, "_cell_picture.html", context | {"item": row})
    detail = await anyio.to_thread.run_sync(detail_context, console, analysis_id)
    return render(request, "detail.html", detail | context, status)


routes = [Route("/analyses/{analysis_id:int}/explain", explain_again, methods=["POST"])]
