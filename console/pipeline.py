"""The upload pipeline of a batch: each stored image is decoded, its pictures made and stored, and then
handed to the gateway stream at once, while the next ones are converted (bounded, in worker threads)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

import anyio

from console.images import RejectedUpload
from console.store import ResultStore, Upload

Convert = Callable[[str, bytes], Upload]
"""Checks an upload completely (file name, bytes) and makes its pictures; RejectedUpload when it fails."""


class Converting:
    """Converts the images ``ids`` in order, at most ``ahead`` at once, and yields each one's bytes as
    soon as its pictures are stored. ``sent`` lists the ids yielded, in order (a stream answer's index
    is a position in it); ``rejected`` the ids that failed their complete check (recorded failed with the
    reason, never yielded)."""

    def __init__(self, store: ResultStore, ids: list[int], convert: Convert, ahead: int = 2) -> None:
        self.store = store
        self.ids = ids
        self.convert = convert
        self.ahead = max(1, ahead)
        self.sent: list[int] = []
        self.rejected: list[int] = []
        self._limiter = anyio.CapacityLimiter(self.ahead)

    def prepare(self, analysis_id: int) -> bytes | None:
        """Converts and stores one image's pictures (in a worker thread); its bytes, or None when it is
        rejected."""
        filename, data = self.store.original(analysis_id)
        try:
            upload = self.convert(filename, data)
        except RejectedUpload as exc:
            self.store.record_result(analysis_id, {"status": "failed", "error": str(exc)})
            return None
        self.store.record_pictures(analysis_id, upload.display_png, upload.thumb_png)
        return data

    async def images(self) -> AsyncIterator[bytes]:
        waiting = iter(self.ids)
        converting: collections.deque[tuple[int, asyncio.Future[bytes | None]]] = collections.deque()

        def fill() -> None:
            while len(converting) < self.ahead and (analysis_id := next(waiting, None)) is not None:
                work = anyio.to_thread.run_sync(self.prepare, analysis_id, limiter=self._limiter)
                converting.append((analysis_id, asyncio.ensure_future(work)))

        try:
            fill()
            while converting:
                analysis_id, work = converting.popleft()
                data = await work
                fill()
                if data is None:
                    self.rejected.append(analysis_id)
                    continue
                self.sent.append(analysis_id)
                yield data
        finally:
            for _, work in converting:
                work.cancel()
