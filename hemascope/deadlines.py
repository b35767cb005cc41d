"""The caller's deadline as the core classes take it: seconds left, or None for no deadline."""

from __future__ import annotations

import grpc

_NO_DEADLINE_S = 1e6  # grpc reports "no deadline" as an enormous time_remaining()


def remaining_seconds(context: grpc.ServicerContext) -> float | None:
    """The caller's remaining deadline in seconds, or None when the caller set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return max(0.0, float(remaining))
