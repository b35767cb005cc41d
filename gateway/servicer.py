"""The thin gRPC layer of the gateway's AnalysisService: protobuf in, core call, audit, protobuf out.

Failure rule (see analysis.proto): Analyze fails as a whole only for the caller's own mistakes (missing or
wrong key, an unreadable or oversized image, unknown or contradictory options: UNAUTHENTICATED or
INVALID_ARGUMENT, no downstream call made), or when every part failed because the services refused the
request (INVALID_ARGUMENT). Any other failure, even of every part, returns a response whose ``parts`` say
what failed and why. Each Analyze and each stream request writes one audit record (when an audit log is
configured); a request that cannot be audited fails with UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

import grpc

from gateway import converters
from gateway.audit import AuditLog, AuditRecord, options_from_message
from gateway.auth import caller_id
from gateway.core import GatewayCore
from gateway.domain import AnalysisReport
from gateway.limits import StreamLimiter
from gateway.stream import StreamProcessor
from hemascope.deadlines import remaining_seconds
from hemascope.errors import HemascopeError, InvalidArgument
from hemascope.interceptors import INTERNAL_MESSAGE
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc

Request = analysis_pb2.AnalyzeStreamRequest
Response = analysis_pb2.AnalyzeStreamResponse


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    def __init__(
        self,
        core: GatewayCore,
        stream_executor: Executor,
        limiter: StreamLimiter,
        audit: AuditLog | None = None,
    ) -> None:
        self.core = core
        self._stream_executor = stream_executor
        self._limiter = limiter
        self._audit = audit

    def Analyze(  # noqa: N802 (gRPC method name)
        self, request: analysis_pb2.AnalyzeRequest, context: grpc.ServicerContext
    ) -> analysis_pb2.AnalyzeResponse:
        report = self._analyze(request, caller_id(context), remaining_seconds(context), "Analyze")
        return converters.analyze_response(report)

    def AnalyzeStream(  # noqa: N802
        self, request_iterator: Iterator[Request], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        caller = caller_id(context)
        with self._limiter.acquire(caller):

            def handle(item: Request) -> Response:
                try:
                    report = self._analyze(item.request, caller, remaining_seconds(context), "AnalyzeStream")
                except HemascopeError as exc:
                    return converters.stream_error(item.request_id, exc)
                return converters.stream_result(item.request_id, report)

            processor: StreamProcessor[Request, Response] = StreamProcessor(
                self._stream_executor,
                self.core.settings.max_stream_in_flight,
                key=lambda item: item.request_id,
                handle=handle,
                duplicate=_duplicate,
                failed=lambda item, _exc: converters.stream_error(
                    item.request_id, HemascopeError(INTERNAL_MESSAGE)
                ),
            )
            yield from processor.run(request_iterator)

    def GetCapabilities(  # noqa: N802
        self, request: analysis_pb2.GetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> analysis_pb2.GetCapabilitiesResponse:
        return converters.capabilities_response(self.core.capabilities())

    def _analyze(
        self, request: analysis_pb2.AnalyzeRequest, caller: str, deadline_s: float | None, rpc: str
    ) -> AnalysisReport:
        started = time.perf_counter()
        options = options_from_message(request.options)
        try:
            image = converters.image_from_request(request)
            report = self.core.analyze(image, converters.options_from_request(request), deadline_s)
        except HemascopeError as exc:
            self._record(caller, "", options, {}, exc.code.name, {}, started, rpc)
            raise
        except Exception:
            self._record(caller, "", options, {}, grpc.StatusCode.INTERNAL.name, {}, started, rpc)
            raise
        parts = {part.part: part.code.name for part in report.parts}
        self._record(caller, report.content_hash, options, report.model_versions, "OK", parts, started, rpc)
        return report

    def _record(
        self,
        caller: str,
        content_hash: str,
        options: dict[str, Any],
        model_versions: dict[str, str],
        outcome: str,
        parts: dict[str, str],
        started: float,
        rpc: str,
    ) -> None:
        if self._audit is None:
            return
        latency_ms = (time.perf_counter() - started) * 1000
        record = AuditRecord(
            caller, content_hash, options, dict(model_versions), outcome, parts, latency_ms, rpc
        )
        self._audit.append(record)


def _duplicate(item: Request) -> Response:
    error = InvalidArgument(
        "another request with this request_id is still in flight on this stream; use unique ids",
        reason="DUPLICATE_REQUEST_ID",
        field="request_id",
    )
    return converters.stream_error(item.request_id, error)
