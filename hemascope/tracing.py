"""Distributed tracing (OpenTelemetry): one trace per request, across the gateway and every service.

Off by default. With ``tracing_endpoint`` set (:class:`hemascope.settings.ServerSettings`), a process gets
its own tracer provider (resource ``service.name``: ``tracing_service_name`` or the service's own name;
sampler: ``tracing_sample_ratio`` of new traces, a parent's decision followed) exporting spans in batches
over OTLP/gRPC. Its gRPC server then opens a span per call, continuing the W3C trace context
(``traceparent`` metadata) the caller sent, and its gRPC clients (the gateway's channels to the services)
open a span per call and send the context on. Health checks are not traced.

Off, :func:`setup_tracing` returns a :class:`Tracing` whose tracer is OpenTelemetry's no-op tracer and
which adds no interceptor: no span is made, nothing is exported, calls are unchanged.

The cores take a :class:`~opentelemetry.trace.Tracer` and open spans for their own steps (a part, a model)
with attributes under the ``hemascope.`` prefix (:func:`set_attributes`). The trace id is in every log
record (:mod:`hemascope.logs`) and in the gateway's audit records (:func:`current_trace_id`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from opentelemetry import trace

from hemascope.errors import HemascopeError
from hemascope.logs import get_logger

if TYPE_CHECKING:  # the SDK and the gRPC instrumentation are imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = get_logger(__name__)

T = TypeVar("T")
INSTRUMENTATION = "hemascope"


def _traced() -> Callable[[Any], bool]:
    """The calls that get spans: all but health checks (polled all the time, they would drown the rest)."""
    from opentelemetry.instrumentation.grpc import filters

    condition: Callable[[Any], bool] = filters.negate(filters.health_check())
    return condition


@dataclass(frozen=True)
class TracingConfig:
    """What tracing needs from a service's settings (see :class:`hemascope.settings.ServerSettings`)."""

    endpoint: str | None
    service_name: str
    sample_ratio: float = 1.0


@dataclass
class Tracing:
    """A process's tracing: its provider (None when off), its tracer and the gRPC interceptors to add."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def server_interceptors(self) -> list[grpc.ServerInterceptor]:
        """The server span per call (continuing the caller's trace); none when off."""
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.grpc import server_interceptor

        interceptor: grpc.ServerInterceptor = server_interceptor(  # type: ignore[no-untyped-call]
            self.provider, filter_=_traced()
        )
        return [interceptor]

    def intercept_channel(self, channel: grpc.Channel) -> grpc.Channel:
        """``channel`` with a client span per call that sends the trace context on; unchanged when off."""
        if self.provider is None:
            return channel
        from opentelemetry.instrumentation.grpc import client_interceptor, grpcext

        interceptor = client_interceptor(self.provider, filter_=_traced())  # type: ignore[no-untyped-call]
        traced: grpc.Channel = grpcext.intercept_channel(channel, interceptor)  # type: ignore[no-untyped-call]
        return traced

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Exports every finished span now (True when done in time; True at once when off)."""
        return self.provider.force_flush(timeout_ms) if self.provider is not None else True

    def shutdown(self) -> None:
        """Exports what is left and stops the exporter (idempotent)."""
        if self.provider is not None:
            provider, self.provider = self.provider, None
            provider.shutdown()
            self.tracer = trace.NoOpTracer()


OFF = Tracing()


def setup_tracing(config: TracingConfig, exporter: SpanExporter | None = None) -> Tracing:
    """The process's tracing for ``config``: off (a no-op tracer) without an endpoint; else a provider
    exporting over OTLP/gRPC to ``config.endpoint`` (``exporter`` replaces that exporter)."""
    if not config.endpoint and exporter is None:
        return Tracing()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.endpoint)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "tracing_on",
        endpoint=config.endpoint or "",
        service_name=config.service_name,
        sample_ratio=config.sample_ratio,
    )
    return Tracing(provider, provider.get_tracer(INSTRUMENTATION))


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), or "" outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def current_span_id() -> str:
    """The current span's id (16 hex digits), or "" outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.span_id, "016x") if context.is_valid else ""


def in_context(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` bound to the caller's context (trace included), to run in another thread (an executor)."""
    context = contextvars.copy_context()
    return lambda: context.run(fn)


@contextmanager
def step(tracer: trace.Tracer, name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span for one step of a core (current inside the block), with ``hemascope.<name>`` attributes and
    ``hemascope.status_code``: OK, the domain error's code, or INTERNAL for any other exception. With
    tracing off (the no-op tracer) it does nothing at all."""
    if isinstance(tracer, trace.NoOpTracer):
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        set_attributes(span, attributes)
        try:
            yield span
        except HemascopeError as exc:
            status_attribute(span, exc.code)
            raise
        except Exception as exc:
            span.record_exception(exc)
            status_attribute(span, grpc.StatusCode.INTERNAL)
            raise
        status_attribute(span, grpc.StatusCode.OK)


def record_call_status(code: grpc.StatusCode, reason: str = "") -> None:
    """Marks the current span (a server call's, in an interceptor) with a failed call's status code and
    reason; the gRPC instrumentation records the code only for ``context.abort``, not for
    ``abort_with_status``, which the kernel uses to attach an ErrorDetail."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        set_attributes(span, {"reason": reason or None})
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))


def set_attributes(span: trace.Span, attributes: dict[str, Any]) -> None:
    """Sets ``hemascope.<name>`` attributes, skipping None values (OpenTelemetry refuses them)."""
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(f"hemascope.{name}", value)


def status_attribute(span: trace.Span, code: grpc.StatusCode) -> None:
    """Records a step's outcome as ``hemascope.status_code`` (the code's name) and marks errors."""
    span.set_attribute("hemascope.status_code", code.name)
    if code is not grpc.StatusCode.OK:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
