"""Models: what the gateway serves now (its capabilities, for the logged-in key) and how each model's votes
compare with the consensus and with the reviewers' classes over the stored results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console import bundles
from console.bundles import list_bundles, load_bundle
from console.web import console_of, render, require
from hemascope.client import HemascopeClientError

RECENT = 5000
"""How many of the latest results the comparison covers."""


@dataclass
class ModelRecord:
    """One model's votes over the stored results."""

    model: str
    votes: int = 0
    with_consensus: int = 0
    abstained: int = 0
    reviewed: int = 0
    with_reviewer: int = 0
    confidence_sum: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.votes if self.votes else 0.0


def compare(reports: list[tuple[str, str | None, dict[str, Any]]]) -> list[ModelRecord]:
    """Per model: votes, agreement with the consensus, abstentions, agreement with the reviewers' classes
    and the reviewers' classes it missed most."""
    records: dict[str, ModelRecord] = {}
    for consensus, reviewed, report in reports:
        for vote in report.get("votes", []):
            record = records.setdefault(vote["model"], ModelRecord(vote["model"]))
            record.votes += 1
            record.with_consensus += vote["label"] == consensus
            record.abstained += bool(vote.get("abstain"))
            record.confidence_sum += float(vote.get("confidence", 0.0))
            if reviewed:
                record.reviewed += 1
                if vote["label"] == reviewed:
                    record.with_reviewer += 1
                else:
                    key = f"{reviewed} as {vote['label']}"
                    record.errors[key] = record.errors.get(key, 0) + 1
    return sorted(records.values(), key=lambda r: r.model)


async def models_page(request: Request) -> Response:
    session = require(request)
    console = console_of(request)
    assert session.api_key is not None
    client = console.client_factory(session.api_key)
    capabilities, problem = None, ""
    try:
        capabilities = await client.capabilities(timeout=10.0)
    except HemascopeClientError as exc:
        problem = (
            f"The gateway did not answer ({exc.code.name}); the comparison below is from stored results."
        )
    finally:
        await client.close()
    reports = await anyio.to_thread.run_sync(console.store.recent_reports, RECENT)
    bundles_dir = console.settings.bundles_dir
    names = await anyio.to_thread.run_sync(list_bundles, bundles_dir)
    context = {
        "caps": capabilities,
        "problem": problem,
        "records": compare(reports),
        "recent": RECENT,
        "bundles": names,
        "picked": _picked(names, request.query_params.get("a", ""), request.query_params.get("b", "")),
    }
    return render(request, "models.html", context)


def _picked(names: list[str], a: str, b: str) -> tuple[str, str]:
    """The two bundles the compare form starts with: those asked for, else the first two listed."""
    first = a if a in names else (names[0] if names else "")
    second = b if b in names else next((n for n in names if n != first), first)
    return first, second


async def compare_bundles(request: Request) -> Response:
    """Two bundles side by side: their model cards and their training reports' metrics tables (overall,
    per class, per source), every difference marked."""
    require(request)
    settings = console_of(request).settings
    names = await anyio.to_thread.run_sync(list_bundles, settings.bundles_dir)
    a_name, b_name = request.query_params.get("a", ""), request.query_params.get("b", "")
    if a_name not in names or b_name not in names:
        listed = ", ".join(names) or "none"
        raise HTTPException(404, f"choose two of the bundles in the bundles folder: {listed}")
    folders = (settings.bundles_dir, settings.reports_dir)
    a = await anyio.to_thread.run_sync(load_bundle, *folders, a_name)
    b = await anyio.to_thread.run_sync(load_bundle, *folders, b_name)
    only_changed = request.query_params.get("changed") == "1"

    def rows(table: Callable[[dict[str, Any]], dict[tuple[str, ...], float]]) -> list[bundles.Row]:
        compared = bundles.compare(table(a.results), table(b.results))
        return [r for r in compared if r.state != "same"] if only_changed else compared

    context = {
        "a": a,
        "b": b,
        "bundles": names,
        "picked": (a_name, b_name),
        "only_changed": only_changed,
        "facts": bundles.facts(a, b),
        "overall": rows(bundles.overall),
        "per_class": rows(bundles.per_class),
        "per_source": rows(bundles.per_source),
        "metric_names": dict(bundles.OVERALL + bundles.PER_CLASS + bundles.PER_SOURCE),
    }
    return render(request, "models_compare.html", context)


routes = [
    Route("/models", models_page, methods=["GET"]),
    Route("/models/compare", compare_bundles, methods=["GET"]),
]
