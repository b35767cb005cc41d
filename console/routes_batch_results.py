"""Batch results (viewer and up): the ``hemascope batch analyze`` result folders under the allow-listed
``batch_results_root``, one of them summarised (per class, malignant, referred, errors) with a filterable,
paginated table of its images and a CSV export of what the filters keep."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.batch_results import (
    BatchResult,
    Filters,
    NotABatchResult,
    list_results,
    read_result,
    reader_missing,
)
from console.exports import _attachment, _spreadsheet_safe
from console.images import safe_name
from console.web import console_of, render, require

PAGE_SIZE = 50
#: Error rows listed on the page (all of them are in the result's _errors table).
ERRORS_SHOWN = 200
CSV_COLUMNS = ("path", "label", "probability", "malignant", "malignant_unconfirmed", "refer", "refer_reason")


def _root(request: Request) -> Path:
    root = console_of(request).settings.batch_results_root
    if root is None:
        raise HTTPException(404, "no batch results folder is configured (batch_results_root)")
    if missing := reader_missing():
        raise HTTPException(503, missing)
    return root


async def _open(request: Request) -> BatchResult:
    root = _root(request)
    name = str(request.path_params["name"])
    try:
        return await anyio.to_thread.run_sync(read_result, root, name)
    except NotABatchResult:
        raise HTTPException(404, "no such batch result") from None


async def list_page(request: Request) -> Response:
    require(request)
    root = console_of(request).settings.batch_results_root
    missing = reader_missing() if root is not None else ""
    folders = await anyio.to_thread.run_sync(list_results, root) if root is not None and not missing else []
    context = {"configured": root is not None, "folders": folders, "missing": missing}
    return render(request, "batch_results.html", context)


async def result_page(request: Request) -> Response:
    require(request)
    result = await _open(request)
    filters = Filters.from_query(dict(request.query_params), result.classes)
    rows = result.rows(filters)
    page = request.query_params.get("page", "1")
    number = int(page) if page.isdigit() and int(page) > 0 else 1
    pages = max(1, math.ceil(rows.num_rows / PAGE_SIZE))
    number = min(number, pages)
    shown = rows.slice((number - 1) * PAGE_SIZE, PAGE_SIZE).to_pylist()
    context = {
        "r": result,
        "filters": filters,
        "per_class": result.per_class(),
        "malignant": result.count("malignant"),
        "unconfirmed": result.count("malignant_unconfirmed"),
        "referred": result.count("refer"),
        "matching": rows.num_rows,
        "rows": shown,
        "page": number,
        "pages": pages,
        "query": filters.as_query(),
        "errors_shown": result.errors[:ERRORS_SHOWN],
    }
    return render(request, "batch_result.html", context)


async def export_csv(request: Request) -> Response:
    require(request)
    result = await _open(request)
    rows = result.rows(Filters.from_query(dict(request.query_params), result.classes))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = [c for c in CSV_COLUMNS if c in rows.column_names]
    writer.writerow(columns)
    for row in rows.select(columns).to_pylist():
        writer.writerow([_spreadsheet_safe(row[c]) for c in columns])
    headers = _attachment(f"{safe_name(result.name)}.csv")
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


routes = [
    Route("/batch-results", list_page, methods=["GET"]),
    Route("/batch-results/{name}", result_page, methods=["GET"]),
    Route("/batch-results/{name}/export.csv", export_csv, methods=["GET"]),
]
