"""Models: what the gateway serves now (its capabilities, for the logged-in key) and how each model's votes
compare with the consensus and with the reviewers' classes over the stored results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
    context = {"caps": capabilities, "problem": problem, "records": compare(reports), "recent": RECENT}
    return render(request, "models.html", context)


routes = [Route("/models", models_page, methods=["GET"])]
