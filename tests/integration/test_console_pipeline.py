"""The console's upload pipeline against a real gateway and real services: each image of a batch is
converted and sent as soon as it is stored, not after the whole upload; none is lost and the results are
those of analysing each image alone."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from console.analysis import run_batch
from console.images import check_upload, probe_upload
from console.store import ResultStore, Upload, make_engine
from hemascope.client import AsyncHemascopeClient
from hemascope.client.stubs import analysis_pb2
from tests.console_fixtures import ConsoleStack

LIMITS = {"max_bytes": 20 * 2**20, "max_pixels": 40_000_000}
HANG_GUARD_S = 300.0


@pytest.fixture
def cells(data_dir: Path) -> list[tuple[str, bytes]]:
    names = ("myeloblast", "seg_neutrophil", "basophil")
    paths = [sorted((data_dir / "bloodcells-5class" / "val" / n).glob("*.jpg"))[0] for n in names]
    return [(path.name, path.read_bytes()) for path in paths]


def test_the_first_image_is_answered_before_the_last_is_converted_and_none_is_lost(
    console_stack: ConsoleStack, tmp_path: Path, cells: list[tuple[str, bytes]]
) -> None:
    truncated = ("truncated.jpg", cells[0][1][: len(cells[0][1]) // 3])
    files = [cells[0], truncated, cells[1], cells[2]]
    store = ResultStore(make_engine(f"sqlite:///{tmp_path / 'console.db'}"))
    uploads: list[Upload] = [probe_upload(name, data, **LIMITS) for name, data in files]
    assert all(u.display_png == b"" for u in uploads)  # the request stores the bytes, nothing decoded
    _, ids = store.create_batch("reviewer", uploads)
    first_answered = threading.Event()
    seen: dict[str, bool] = {}

    def convert(filename: str, data: bytes) -> Upload:
        if filename == files[-1][0]:  # the last image: its conversion waits for the first answer
            seen["first answer before the last conversion"] = first_answered.wait(HANG_GUARD_S)
        return check_upload(filename, data, **LIMITS)

    async def analyse() -> None:
        client = AsyncHemascopeClient(console_stack.gateway_address, api_key=console_stack.keys["reviewer"])
        batch = run_batch(store, client, ids, analysis_pb2.AnalyzeOptions(), 120.0, convert, ahead=2)
        task = asyncio.ensure_future(batch)
        while not task.done():
            if store.get(ids[0])["status"] == "done":  # type: ignore[index]
                first_answered.set()
            await asyncio.sleep(0.05)
        await task

    asyncio.run(asyncio.wait_for(analyse(), HANG_GUARD_S * 2))
    assert seen == {"first answer before the last conversion": True}
    rows = [store.get(i) for i in ids]
    assert [r["status"] for r in rows if r] == ["done", "failed", "done", "done"]
    assert "truncated.jpg: not a readable image (or truncated)" in rows[1]["error"]  # type: ignore[index]
    assert store.blob(ids[1], "display_png") is None  # a rejected image gets no pictures
    for analysis_id in (ids[0], ids[2], ids[3]):
        assert store.blob(analysis_id, "display_png") and store.blob(analysis_id, "thumb_png")

    async def alone() -> list[analysis_pb2.AnalyzeResponse]:
        address, key = console_stack.gateway_address, console_stack.keys["reviewer"]
        async with AsyncHemascopeClient(address, api_key=key) as client:
            return [await client.analyze(data) for _, data in cells]

    for row, single in zip((rows[0], rows[2], rows[3]), asyncio.run(alone()), strict=True):
        assert row is not None
        assert row["content_hash"] == single.content_hash  # each answer belongs to its own image
        assert row["label"] == single.classification.consensus_label
        assert row["confidence"] == pytest.approx(single.classification.consensus_probability, abs=1e-6)
