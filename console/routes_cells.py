"""A white cell of a stored smear, classified on request: the crop is cut here from the stored original by
the box's index in the smear's stored detection (the browser names an index only) and sent to the gateway
for classification; the answer is shown next to the smear, not stored."""

from __future__ import annotations

import json
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.analysis import report_values
from console.cells import NoSuchCell, crop_box, white_cell_box, white_ordinal
from console.web import check_csrf, console_of, render, require
from hemascope.client import HemascopeClientError
from hemascope.client.stubs import analysis_pb2


def _smear_cell(request: Request) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The stored smear, the box index and its box; 404 unless the index names a white cell of a smear
    whose detection is done."""
    store = console_of(request).store
    row = store.get(request.path_params["analysis_id"])
    if row is None or row["kind"] != "smear" or row["status"] != "done":
        raise HTTPException(404, "no such analysed smear")
    index = int(request.path_params["index"])
    try:
        return row, index, white_cell_box(row["report"], index)
    except NoSuchCell as exc:
        raise HTTPException(404, str(exc)) from None


async def _crop(request: Request, row: dict[str, Any], box: dict[str, Any]) -> bytes:
    store = console_of(request).store
    _, image = await anyio.to_thread.run_sync(store.original, row["id"])
    try:
        return await anyio.to_thread.run_sync(crop_box, image, box)
    except (OSError, ValueError) as exc:
        raise HTTPException(404, f"the cell cannot be cut from the stored smear: {exc}") from None


async def cell_picture(request: Request) -> Response:
    require(request)
    row, _, box = _smear_cell(request)
    data = await _crop(request, row, box)
    return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=3600"})


async def classify_cell(request: Request) -> Response:
    """Classifies one white cell of a smear through the gateway; answers the result fragment (with
    htmx) or a page holding it."""
    session = require(request, "reviewer")
    async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
        check_csrf(request, session, form)
    row, index, box = _smear_cell(request)
    crop = await _crop(request, row, box)
    assert session.api_key is not None
    client = console_of(request).client_factory(session.api_key)
    result: dict[str, Any] = {}
    problem = ""
    try:
        response = await client.analyze(crop, options=analysis_pb2.AnalyzeOptions())
        result = report_values(response)
        result["report"] = json.loads(result["report"])
        if result["status"] != "done":
            problem = result["error"]
    except HemascopeClientError as exc:
        problem = f"The gateway did not classify the cell ({exc.code.name}): {exc}"
    finally:
        await client.close()
    ordinal = white_ordinal(row["report"], index)
    context = {"item": row, "index": index, "ordinal": ordinal, "result": result, "problem": problem}
    template = "_cell_result.html" if request.headers.get("hx-request") else "cell.html"
    return render(request, template, context)


routes = [
    Route("/analyses/{analysis_id:int}/cells/{index:int}.png", cell_picture, methods=["GET"]),
    Route("/analyses/{analysis_id:int}/cells/{index:int}/classify", classify_cell, methods=["POST"]),
]
