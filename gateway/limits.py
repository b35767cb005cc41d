"""Request limits of the gateway that image decoding does not already enforce.

Image bytes and pixels are checked by :func:`hemascope.imaging.decode.decode_image` with its
:class:`~hemascope.imaging.decode.ImageLimits` (INVALID_ARGUMENT, reasons ``IMAGE_TOO_LARGE`` /
``TOO_MANY_PIXELS``); the whole message size by gRPC's ``max_receive_message_length``. This module adds
the limits that are about callers, not images: open streams per caller (:class:`StreamLimiter`,
RESOURCE_EXHAUSTED, so a client backs off and retries) and items per batch (:func:`check_batch_size`,
INVALID_ARGUMENT, since retrying the same batch cannot succeed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hemascope.errors import InvalidArgument, ResourceExhausted

REASON_TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
REASON_BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
REASON_EMPTY_BATCH = "EMPTY_BATCH"


class StreamLimiter:
    """Counts each caller's open streams; ``max_per_caller`` of 0 means no limit."""

    def __init__(self, max_per_caller: int) -> None:
        if max_per_caller < 0:
            raise ValueError(f"max_per_caller must be >= 0 (0 = no limit), got {max_per_caller}")
        self.max_per_caller = max_per_caller
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def open_streams(self, caller_id: str) -> int:
        """How many streams ``caller_id`` has open now."""
        with self._lock:
            return self._open.get(caller_id, 0)

    @contextmanager
    def acquire(self, caller_id: str) -> Iterator[None]:
        """Holds one of ``caller_id``'s stream slots for the ``with`` block; ResourceExhausted when all are
        taken. The slot is released however the block ends."""
        with self._lock:
            current = self._open.get(caller_id, 0)
            if self.max_per_caller and current >= self.max_per_caller:
                raise ResourceExhausted(
                    f"too many open streams: at most {self.max_per_caller} AnalyzeStream calls per caller "
                    "at once; close one or wait for one to finish, then retry",
                    reason=REASON_TOO_MANY_STREAMS,
                )
            self._open[caller_id] = current + 1
        try:
            yield
        finally:
            with self._lock:
                remaining = self._open[caller_id] - 1
                if remaining:
                    self._open[caller_id] = remaining
                else:
                    del self._open[caller_id]


def check_batch_size(count: int, limit: int, field: str = "inputs") -> None:
    """InvalidArgument when a batch of ``count`` items is empty or larger than ``limit`` (0 = no limit)."""
    if count <= 0:
        raise InvalidArgument(
            f"{field} is empty: send at least one item", reason=REASON_EMPTY_BATCH, field=field
        )
    if limit and count > limit:
        raise InvalidArgument(
            f"{field} holds {count} items; the limit is {limit} per request: split the batch",
            reason=REASON_BATCH_TOO_LARGE,
            field=field,
        )
