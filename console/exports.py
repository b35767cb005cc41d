"""Exports: the filtered results as CSV or JSON, and reviewed images as a folder-per-class zip."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from console.images import FORMATS, safe_name
from console.routes_results import parse_filters
from console.web import console_of, require

COLUMNS = (
    "id", "batch_id", "filename", "created", "created_by", "status", "error", "label", "confidence",
    "agreement", "malignant_probability", "malignant", "refer", "refer_reasons", "site_status", "review",
    "reviewed_label", "content_hash", "width", "height",
)  # fmt: skip
EXPORT_LIMIT = 100_000


def _record(row: dict[str, Any]) -> dict[str, Any]:
    record = {name: row.get(name) for name in COLUMNS if name != "refer_reasons"}
    record["created"] = row["created"].isoformat() if row.get("created") else None
    record["refer_reasons"] = row["report"].get("refer_reasons", [])
    record["votes"] = [
        {k: v[k] for k in ("model", "label", "confidence", "abstain")} for v in row["report"].get("votes", [])
    ]
    record["probabilities"] = row["report"].get("probabilities", {})
    return record


def _spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (a text starting with = + - @ gets a quote)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _attachment(name: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{name}"'}


def export_csv(request: Request) -> Response:
    require(request)
    rows = console_of(request).store.search(parse_filters(request.query_params), limit=EXPORT_LIMIT)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        record = _record(row)
        record["refer_reasons"] = "; ".join(record["refer_reasons"])
        writer.writerow([_spreadsheet_safe(record[name]) for name in COLUMNS])
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers=_attachment(f"results-{_stamp()}.csv"),
    )


def export_json(request: Request) -> Response:
    require(request)
    rows = console_of(request).store.search(parse_filters(request.query_params), limit=EXPORT_LIMIT)
    body = json.dumps([_record(row) for row in rows], indent=1)
    return Response(body, media_type="application/json", headers=_attachment(f"results-{_stamp()}.json"))


def export_training(request: Request) -> Response:
    """Reviewed images (``?corrected=only``: corrected ones only) as ``<class>/<id>-<name>`` in a zip, with a
    labels.csv naming each file's class and original name. The zip is built in a temporary file (in memory
    up to 32 MiB) and streamed."""
    require(request, "reviewer")
    corrected_only = request.query_params.get("corrected") == "only"
    store = console_of(request).store
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 2**20)  # noqa: SIM115 (closed by the stream)
    index = io.StringIO()
    writer = csv.writer(index)
    writer.writerow(["path", "label", "analysis_id", "original_filename"])
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for analysis_id, label, filename, fmt, data in store.reviewed(corrected_only):
            stem = safe_name(filename).rsplit(".", 1)[0] or "image"
            path = f"{safe_name(label)}/{analysis_id}-{stem}.{FORMATS.get(fmt, 'img')}"
            archive.writestr(path, data)
            writer.writerow([path, label, analysis_id, _spreadsheet_safe(filename)])
        archive.writestr("labels.csv", index.getvalue())
    size = spool.tell()
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := spool.read(1 << 20):
                yield chunk
        finally:
            spool.close()

    headers = _attachment(f"reviewed-{_stamp()}.zip") | {"content-length": str(size)}
    return StreamingResponse(chunks(), media_type="application/zip", headers=headers)


routes = [
    Route("/export/results.csv", export_csv, methods=["GET"]),
    Route("/export/results.json", export_json, methods=["GET"]),
    Route("/export/training.zip", export_training, methods=["GET"]),
]
