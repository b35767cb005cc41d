"""Runs a batch through the gateway and stores each report as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from PIL import Image, ImageDraw

from console.pipeline import Convert, Converting
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
    if response.HasField("detection"):
        boxes: list[dict[str, Any]] = [
            {"x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2, "class_name": b.class_name, "score": b.score}
            for b in response.detection.boxes
        ]
        counts: dict[str, int] = {}
        for box in boxes:
            counts[box["class_name"]] = counts.get(box["class_name"], 0) + 1
        report["detection"] = {
            "boxes": boxes,
            "counts": dict(sorted(counts.items())),
            "model_version": response.detection.model_version,
        }
    if response.HasField("explanation"):
        report["explanation"] = explanation_record(response.explanation)
        values["overlay_png"] = bytes(response.explanation.overlay_png)
    failed = [p for p in parts if p["code"] != 0]
    if failed and "label" not in values:
        values["status"] = "failed"
        values["error"] = "; ".join(f"{p['part']}: {p['message'] or p['reason']}" for p in failed)
    values["report"] = json.dumps(report)
    return values


def explanation_record(exp: analysis_pb2.CellExplanation) -> dict[str, Any]:
    """What is stored of an explanation besides its overlay: the model (and version), method and class
    explained, and the model's probability of that class."""
    return {
        "model": exp.model,
        "method": exp.method,
        "class_name": exp.class_name,
        "class_probability": exp.class_probability,
        "model_version": exp.model_version,
    }


BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6")


def boxes_picture(store: ResultStore, analysis_id: int, response: analysis_pb2.AnalyzeResponse) -> bytes:
    """The stored display picture with the detected boxes drawn on it (boxes come in original pixels)."""
    with Image.open(io.BytesIO(store.blob(analysis_id, "display_png") or b"")) as shown:
        picture = shown.convert("RGB")
    scale = picture.width / max(1, response.width)
    draw = ImageDraw.Draw(picture)
    names = sorted({b.class_name for b in response.detection.boxes})
    for box in response.detection.boxes:
        colour = BOX_COLOURS[names.index(box.class_name) % len(BOX_COLOURS)]
        corners = (box.x1 * scale, box.y1 * scale, box.x2 * scale, box.y2 * scale)
        draw.rectangle(corners, outline=colour, width=max(1, round(2 * scale)))
        draw.text((corners[0] + 2, corners[1] + 1), f"{box.class_name} {box.score:.2f}", fill=colour)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


async def run_batch(
    store: ResultStore,
    client: AsyncHemascopeClient,
    ids: list[int],
    options: analysis_pb2.AnalyzeOptions,
    timeout_s: float,
    convert: Convert,
    ahead: int = 2,
) -> None:
    """Analyses the stored images ``ids`` over one gateway stream, storing each report as it finishes.

    The uploads are pipelined with the gateway (``Converting``): each image is decoded, its pictures made
    and stored, and sent at once while the next ones are converted, so the first answer does not wait for
    the whole batch. An image that fails its complete check is recorded failed with the reason and never
    sent; every image ends done or failed (unless the console stops: then it is marked interrupted at the
    next start)."""
    pipeline = Converting(store, ids, convert, ahead)
    done: set[int] = set()
    try:
        async for result in client.analyze_many(
            pipeline.images(), options=options, timeout=timeout_s * len(ids)
        ):
            if not 0 <= result.index < len(pipeline.sent):
                continue
            analysis_id = pipeline.sent[result.index]
            if result.response is not None:
                values = report_values(result.response)
                if result.response.HasField("detection") and store_boxes_picture(options):
                    values["overlay_png"] = await anyio.to_thread.run_sync(
                        boxes_picture, store, analysis_id, result.response
                    )
            else:
                values = {"status": "failed", "error": str(result.error)}
            await anyio.to_thread.run_sync(store.record_result, analysis_id, values)
            done.add(analysis_id)
        error = "the gateway closed the stream without answering for this image"
    except HemascopeClientError as exc:
        log.warning("console.batch_failed", error=type(exc).__name__)
        error = str(exc)
    finally:
        await client.close()
    failed = {"status": "failed", "error": error}
    for analysis_id in set(ids) - done - set(pipeline.rejected):
        await anyio.to_thread.run_sync(store.record_result, analysis_id, failed)


def store_boxes_picture(options: analysis_pb2.AnalyzeOptions) -> bool:
    """Whether the detected boxes are drawn into the stored overlay: for smears (detection only); a cell's
    overlay is its Grad-CAM map, and its boxes are drawn over the picture by the page."""
    return options.skip_classification


class BatchRunner:
    """Runs batches as tasks of the event loop (keeping references so they are not garbage-collected),
    at most ``per_key`` at once for one API key (the gateway limits the streams a caller holds open; the
    next batch waits its turn instead of being refused), and cancels them at shutdown."""

    def __init__(self, per_key: int = 2) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_key = per_key
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    def start(self, coroutine: Coroutine[Any, Any, None], key: str = "") -> None:
        """Runs ``coroutine`` once one of ``key``'s slots is free."""
        slot_id = hashlib.sha256(key.encode()).hexdigest()
        slot = self._slots.setdefault(slot_id, asyncio.Semaphore(self._per_key))
        self._users[slot_id] = self._users.get(slot_id, 0) + 1

        async def run() -> None:
            try:
                async with slot:
                    await coroutine
            finally:
                coroutine.close()  # never started when cancelled while waiting: no "never awaited" warning
                self._users[slot_id] -= 1
                if not self._users[slot_id]:
                    del self._users[slot_id], self._slots[slot_id]

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
