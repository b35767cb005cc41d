"""The thin gRPC layer of the gateway's AnalysisService: protobuf in, data plane call, protobuf out.

Failure rule (see analysis.proto): Analyze fails as a whole only for the caller's own mistakes (missing or
wrong key, an unreadable or oversized image, unknown or contradictory options: UNAUTHENTICATED or
INVALID_ARGUMENT, no downstream call made), or when every part failed because the services refused the
request (INVALID_ARGUMENT). Any other failure, even of every part, returns a response whose ``parts`` say
what failed and why. Identity, limits and audit are the data plane's (:mod:`gateway.dataplane`): each
Analyze and each stream request is audited, and a request that cannot be audited fails with UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import grpc

from gateway import converters
from gateway.audit import options_from_message
from gateway.dataplane import DataPlane
from gateway.domain import AnalysisReport
from gateway.identity import Caller
from gateway.interceptor import caller_of
from gateway.stream import StreamProcessor
from hemascope.deadlines import remaining_seconds
from hemascope.errors import DeadlineExceeded, HemascopeError, InvalidArgument
from hemascope.interceptors import INTERNAL_MESSAGE
from hemascope.v1 import analysis_pb2, analysis_pb2_grpc

Request = analysis_pb2.AnalyzeStreamRequest
Response = analysis_pb2.AnalyzeStreamResponse


def idle_stream(timeout_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the stream sent no request for {timeout_s:g} s with nothing in flight; open a new stream when "
        "there is more to analyse",
        reason="STREAM_IDLE",
    )


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    def __init__(
        self,
        plane: DataPlane,
        stream_executor: Executor,
        max_stream_in_flight: int,
        stream_idle_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plane = plane
        self._stream_executor = stream_executor
        self._max_in_flight = max_stream_in_flight
        self._idle_timeout_s = stream_idle_timeout_s
        self._clock = clock

    def Analyze(  # noqa: N802 (gRPC method name)
        self, request: analysis_pb2.AnalyzeRequest, context: grpc.ServicerContext
    ) -> analysis_pb2.AnalyzeResponse:
        report = self._analyze(request, caller_of(context), remaining_seconds(context), "Analyze")
        return converters.analyze_response(report)

    def AnalyzeStream(  # noqa: N802
        self, request_iterator: Iterator[Request], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        caller = caller_of(context)
        timeout = self._idle_timeout_s
        with self.plane.stream(caller, "AnalyzeStream"):

            def handle(item: Request) -> Response:
                try:
                    report = self._analyze(item.request, caller, remaining_seconds(context), "AnalyzeStream")
                except HemascopeError as exc:
                    return converters.stream_error(item.request_id, exc)
                return converters.stream_result(item.request_id, report)

            processor: StreamProcessor[Request, Response] = StreamProcessor(
                self._stream_executor,
                self._max_in_flight,
                key=lambda item: item.request_id,
                handle=handle,
                duplicate=_duplicate,
                failed=lambda item, _exc: converters.stream_error(
                    item.request_id, HemascopeError(INTERNAL_MESSAGE)
                ),
                idle_timeout_s=timeout,
                idle_error=lambda: idle_stream(timeout or 0.0),
                clock=self._clock,
            )
            yield from processor.run(request_iterator)

    def GetCapabilities(  # noqa: N802
        self, request: analysis_pb2.GetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> analysis_pb2.GetCapabilitiesResponse:
        caller = caller_of(context)
        return converters.capabilities_response(self.plane.capabilities(), self.plane.site_status(caller))

    def _analyze(
        self, request: analysis_pb2.AnalyzeRequest, caller: Caller, deadline_s: float | None, rpc: str
    ) -> AnalysisReport:
        return self.plane.analyze(
            caller,
            rpc,
            lambda: (converters.image_from_request(request), converters.options_from_request(request)),
            deadline_s,
            options_from_message(request.options),
        )


def _duplicate(item: Request) -> Response:
    error = InvalidArgument(
        "another request with this request_id is still in flight on this stream; use unique ids",
        reason="DUPLICATE_REQUEST_ID",
        field="request_id",
    )
    return converters.stream_error(item.request_id, error)
