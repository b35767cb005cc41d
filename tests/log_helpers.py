"""Capturing structured log events whatever the logging set-up of the test process.

structlog may be unconfigured (events go to its own processors, which ``capture_logs`` replaces) or routed
through stdlib logging by ``hemascope.logs.configure_logging`` with cached loggers (events then reach
pytest's ``caplog`` as dicts); :func:`captured_events` looks in both places, so a test does not depend on
which tests ran before it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog


@contextmanager
def captured_events(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """Yields a list that holds, after the block, every event logged in it (with ``log_level``)."""
    events: list[dict[str, Any]] = []
    with caplog.at_level(logging.DEBUG), structlog.testing.capture_logs() as captured:
        start = len(caplog.records)
        yield events
    events.extend(captured)
    for record in caplog.records[start:]:
        if isinstance(record.msg, dict):
            events.append({"log_level": record.levelname.lower(), **record.msg})
