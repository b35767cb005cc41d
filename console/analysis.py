"""Runs a batch through the gateway and stores each report as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from console.store import ResultStore
from hemascope.client import AsyncHemascopeClient, HemascopeClientError
from hemascope.client.stubs import analysis_pb2
from hemascope.logs import get_logger

log = get_logger(__name__)

ClientFactory = Callable[[str], AsyncHemascopeClient]
"""Makes a gateway client for an API key (inside the running loop)."""


def report_values(response: analysis_pb2.AnalyzeResponse) -> dict[str, Any]:
    """The columns stored for one gateway report."""
    parts = [
        {"part": p.part, "code": p.code, "reason": p.reason, "message": p.message, "elapsed_ms": p.elapsed_ms}
        for p in response.parts
    ]
    report: dict[str, Any] = {"parts": parts, "model_versions": dict(response.model_versions)}
    values: dict[str, Any] = {"status": "done", "error": "", "content_hash": response.content_hash}
    if response.HasField("classification"):
        cls = response.classification
        votes: list[dict[str, Any]] = [
            {
                "model": p.model,
                "label": p.label,
                "confidence": p.confidence,
                "malignant_probability": p.malignant_probability,
                "abstain": p.abstain,
                "out_of_distribution": p.out_of_distribution,
                "probabilities": {c.class_name: c.probability for c in p.probabilities},
            }
            for p in cls.predictions
        ]
        names = list(votes[0]["probabilities"]) if votes else []
        mean = {n: sum(v["probabilities"].get(n, 0.0) for v in votes) / len(votes) for n in names}
        report |= {
            "votes": votes,
            "probabilities": mean,
            "refer_reasons": list(cls.refer_reasons),
            "bundle_version": cls.bundle_version,
            "malignant_unconfirmed": cls.malignant_unconfirmed,
            "atypical_acquisition": cls.atypical_acquisition,
        }
        values |= {
            "label": cls.consensus_label,
            "confidence": cls.consensus_probability,
            "agreement": cls.agreement,
            "malignant_probability": cls.malignant_probability,
            "malignant": cls.malignant,
            "refer": cls.refer,
        }
    if response.HasField("site"):
        report["site"] = {
            "status": response.site.status,
            "atypical_share": response.site.atypical_share,
            "window_images": response.site.window_images,
            "window": response.site.window,
        }
        values["site_status"] = response.site.status
    if response.HasField("explanation"):
        exp = response.explanation
        report["explanation"] = {"model": exp.model, "method": exp.method, "class_name": exp.class_name}
        values["overlay_png"] = bytes(exp.overlay_png)
    failed = [p for p in parts if p["code"] != 0]
    if failed and "label" not in values:
        values["status"] = "failed"
        values["error"] = "; ".join(f"{p['part']}: {p['message'] or p['reason']}" for p in failed)
    values["report"] = json.dumps(report)
    return values


async def run_batch(
    store: ResultStore,
    client: AsyncHemascopeClient,
    ids: list[int],
    options: analysis_pb2.AnalyzeOptions,
    timeout_s: float,
) -> None:
    """Analyses the stored images ``ids`` over one gateway stream, storing each report as it finishes."""

    async def images() -> AsyncIterator[bytes]:
        for analysis_id in ids:
            yield await anyio.to_thread.run_sync(store.image, analysis_id)

    done: set[int] = set()
    try:
        async for result in client.analyze_many(images(), options=options, timeout=timeout_s * len(ids)):
            if not 0 <= result.index < len(ids):
                continue
            analysis_id = ids[result.index]
            if result.response is not None:
                values = report_values(result.response)
            else:
                values = {"status": "failed", "error": str(result.error)}
            await anyio.to_thread.run_sync(store.record_result, analysis_id, values)
            done.add(analysis_id)
    except HemascopeClientError as exc:
        log.warning("console.batch_failed", error=type(exc).__name__)
        for analysis_id in ids:
            if analysis_id not in done:
                await anyio.to_thread.run_sync(
                    store.record_result, analysis_id, {"status": "failed", "error": str(exc)}
                )
    finally:
        await client.close()


class BatchRunner:
    """Keeps the running batches' tasks (so they are not garbage-collected) and cancels them at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
