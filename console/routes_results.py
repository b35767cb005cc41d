"""Results: the table, the thumbnail gallery, one analysis in detail, its pictures, reviews and deletion."""

from __future__ import annotations

import math
from typing import Any

import anyio
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.explain import card_choices
from console.store import Filters
from console.web import Console, check_csrf, console_of, redirect, render, require, role_check

PAGE_SIZE = 100
MAX_COMMENT = 2000


def _flag(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


def _fraction(value: str | None, name: str) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number between 0 and 1") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise HTTPException(400, f"{name} must be a number between 0 and 1")
    return number


def parse_filters(params: QueryParams) -> Filters:
    """Filters from the query string; 400 for a malformed one."""
    batch = params.get("batch") or ""
    if batch and not batch.isdigit():
        raise HTTPException(400, "batch must be a number")
    review = params.get("review") or None
    if review not in (None, "none", "confirmed", "corrected"):
        raise HTTPException(400, "review must be none, confirmed or corrected")
    return Filters(
        label=(params.get("label") or None),
        malignant=_flag(params.get("malignant")),
        refer=_flag(params.get("refer")),
        min_confidence=_fraction(params.get("min_confidence"), "min_confidence"),
        max_confidence=_fraction(params.get("max_confidence"), "max_confidence"),
        batch_id=int(batch) if batch else None,
        review=review,
    )


def _listing(request: Request, template: str) -> Response:
    require(request)
    store = console_of(request).store
    filters = parse_filters(request.query_params)
    page = request.query_params.get("page", "1")
    number = int(page) if page.isdigit() and int(page) > 0 else 1
    rows = store.search(filters, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    total = store.count(filters)
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    context: dict[str, Any] = {
        "rows": rows,
        "total": total,
        "page": number,
        "pages": max(1, math.ceil(total / PAGE_SIZE)),
        "labels": store.labels(),
        "params": request.query_params,
        "query": query,
    }
    return render(request, template, context)


def results_page(request: Request) -> Response:
    return _listing(request, "results.html")


def gallery_page(request: Request) -> Response:
    return _listing(request, "gallery.html")


def _analysis(request: Request) -> dict[str, Any]:
    row = console_of(request).store.get(request.path_params["analysis_id"])
    if row is None:
        raise HTTPException(404, "no such analysis")
    return row


def detail_context(console: Console, analysis_id: int) -> dict[str, Any]:
    """The detail page's analysis, its review history and the classes a review may choose; 404 when
    there is no such analysis."""
    row = console.store.get(analysis_id)
    if row is None:
        raise HTTPException(404, "no such analysis")
    history = console.store.reviews_of(row["id"])
    classes = list(row["report"].get("probabilities", {}))
    return {"item": row, "history": history, "classes": classes}


async def detail_page(request: Request) -> Response:
    session = require(request)
    console = console_of(request)
    context = await anyio.to_thread.run_sync(detail_context, console, request.path_params["analysis_id"])
    choices = await card_choices(console, session, [context["item"]])
    return render(request, "detail.html", context | {"choices": choices})


def _picture(column: str) -> Any:
    def handler(request: Request) -> Response:
        require(request)
        data = console_of(request).store.blob(request.path_params["analysis_id"], column)
        if data is None:
            raise HTTPException(404, "no such picture")
        return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    return handler


async def review(request: Request) -> Response:
    session = require(request, "reviewer")
    async with request.form(max_files=0, max_fields=6, max_part_size=8192) as form:
        check_csrf(request, session, form)
        label = str(form.get("label") or "")
        comment = str(form.get("comment") or "").strip()
    row = _analysis(request)
    classes = list(row["report"].get("probabilities", {}))
    if row["status"] != "done" or label not in classes:
        raise HTTPException(400, f"the class must be one of: {', '.join(classes) or 'none (no result)'}")
    if len(comment) > MAX_COMMENT:
        raise HTTPException(400, f"the comment is longer than {MAX_COMMENT} characters")
    assert session.user is not None
    console_of(request).store.review(row["id"], session.user.name, label, comment)
    return redirect(f"/analyses/{row['id']}")


async def delete(request: Request) -> Response:
    session = require(request, "admin")
    async with request.form(max_files=0, max_fields=4, max_part_size=4096) as form:
        check_csrf(request, session, form)
    if not console_of(request).store.delete(request.path_params["analysis_id"]):
        raise HTTPException(404, "no such analysis")
    return redirect("/results")


def home(request: Request) -> Response:
    require(request)
    return redirect("/analyse" if role_check("reviewer")(request) else "/results")


routes = [
    Route("/", home, methods=["GET"]),
    Route("/results", results_page, methods=["GET"]),
    Route("/gallery", gallery_page, methods=["GET"]),
    Route("/analyses/{analysis_id:int}", detail_page, methods=["GET"]),
    Route("/analyses/{analysis_id:int}/image.png", _picture("display_png"), methods=["GET"]),
    Route("/analyses/{analysis_id:int}/thumb.png", _picture("thumb_png"), methods=["GET"]),
    Route("/analyses/{analysis_id:int}/overlay.png", _picture("overlay_png"), methods=["GET"]),
    Route("/analyses/{analysis_id:int}/review", review, methods=["POST"]),
    Route("/analyses/{analysis_id:int}/delete", delete, methods=["POST"]),
]
