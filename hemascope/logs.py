"""Structured logging set-up (structlog over the standard library).

Log records carry event names and small scalar fields only. Never pass image bytes, caller-supplied image
ids or anything that could identify a patient: log the content hash prefix instead.

A record made inside a recorded trace (:mod:`hemascope.tracing`) carries its ``trace_id`` and ``span_id``,
so the logs of one request can be found from its trace and the other way round.
"""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger


def add_trace_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Adds ``trace_id`` and ``span_id`` (hex) of the current span, when there is a recorded one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Route structlog and stdlib logging to stderr, as JSON lines or console lines."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger; use keyword fields, e.g. ``log.info("embedded", hash=h[:12], ms=3.1)``."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
