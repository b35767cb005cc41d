"""The blocking client of the Hemascope gateway."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hemascope.client.common import (
    DEFAULT_TIMEOUT_S,
    ImageSource,
    StreamResult,
    TlsConfig,
    analyze_options,
    analyze_request,
    call_metadata,
    channel_options,
)
from hemascope.client.errors import DeadlineExceeded, from_detail, from_rpc_error
from hemascope.v1 import admin_pb2, admin_pb2_grpc, analysis_pb2, analysis_pb2_grpc


class HemascopeClient:
    """Calls the gateway's ``AnalysisService``. Thread-safe; use as a context manager or call ``close()``.

    >>> with HemascopeClient("127.0.0.1:50050", api_key=key) as client:
    ...     report = client.analyze(Path("cell.jpg"), explain=True)
    ...     print(report.classification.consensus_label, report.classification.refer)

    Failed calls raise :class:`~hemascope.client.errors.HemascopeClientError` subclasses.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = call_metadata(api_key)
        options = channel_options(tls)
        self._channel = (
            grpc.secure_channel(address, tls.credentials(), options=options)
            if tls is not None
            else grpc.insecure_channel(address, options=options)
        )
        self._stub = analysis_pb2_grpc.AnalysisServiceStub(self._channel)
        self._admin = admin_pb2_grpc.GatewayAdminServiceStub(self._channel)

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> HemascopeClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Blocks until the gateway's health check says SERVING; DeadlineExceeded after ``timeout``."""
        health = health_pb2_grpc.HealthStub(self._channel)
        until = time.monotonic() + timeout
        while True:
            left = until - time.monotonic()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=max(0.1, min(2.0, left)))
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() + 0.25 > until:
                raise DeadlineExceeded(f"the gateway at {self.address} was not SERVING after {timeout} s")
            time.sleep(0.25)

    # -- calls ----------------------------------------------------------------------------------------
    def analyze(
        self,
        image: ImageSource,
        *,
        options: analysis_pb2.AnalyzeOptions | None = None,
        image_id: str | None = None,
        media_type: str = "",
        timeout: float | None = None,
        **fields: Any,
    ) -> analysis_pb2.AnalyzeResponse:
        """Analyses one image (bytes or a path). ``fields`` are ``AnalyzeOptions`` fields, e.g.
        ``detect=True, explain=True, models=["svm"]``; they override ``options``. A report with failed
        parts (see ``response.parts``) is returned, not raised: only a call that failed as a whole raises."""
        request = analyze_request(image, options, image_id, media_type, fields)
        try:
            response: analysis_pb2.AnalyzeResponse = self._stub.Analyze(
                request, timeout=timeout or self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    def analyze_many(
        self,
        images: Iterable[ImageSource],
        *,
        options: analysis_pb2.AnalyzeOptions | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> Iterator[StreamResult]:
        """Analyses ``images`` over one ``AnalyzeStream``; yields a :class:`StreamResult` per image as it
        finishes (not in input order: use ``result.index``). Images are read lazily, and only as fast as
        the gateway accepts them (gRPC flow control). A failed image is a result with ``error`` set;
        a failure of the stream itself raises."""
        base = analyze_options(options, **fields)
        indexes: dict[str, int] = {}
        lock = threading.Lock()

        failures: list[Exception] = []

        def requests() -> Iterator[analysis_pb2.AnalyzeStreamRequest]:
            try:
                for index, image in enumerate(images):
                    request = analyze_request(image, base, None, "", {})
                    with lock:
                        indexes[str(index)] = index
                    yield analysis_pb2.AnalyzeStreamRequest(request_id=str(index), request=request)
            except Exception as exc:  # e.g. an unreadable file: re-raised to the caller below
                failures.append(exc)
                raise

        call = self._stub.AnalyzeStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for answer in call:
                with lock:
                    index = indexes.pop(answer.request_id, -1)
                yield _result(index, answer)
        except grpc.RpcError as exc:
            if failures:  # gRPC cancelled the call because reading the inputs failed
                raise failures[0] from None
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    def capabilities(self, *, timeout: float | None = None) -> analysis_pb2.GetCapabilitiesResponse:
        """Classes, models, versions, limits and the health of every downstream service."""
        try:
            response: analysis_pb2.GetCapabilitiesResponse = self._stub.GetCapabilities(
                analysis_pb2.GetCapabilitiesRequest(),
                timeout=timeout or self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    def promote_bundle(self, path: str, *, timeout: float | None = None) -> admin_pb2.PromoteBundleResponse:
        """Makes the classifier serve the bundle at ``path`` (as the classifier service sees it; empty:
        reload the bundle it serves) through the gateway's ``GatewayAdminService.PromoteBundle``. Needs an
        API key whose role is admin (else PermissionDenied, reason ``ADMIN_ROLE_REQUIRED``); the
        classifier's refusals raise with its reason: FailedPrecondition (``BAD_BUNDLE``, the previous bundle
        keeps serving), InvalidArgument (``BAD_PATH``), PermissionDenied (``RELOAD_PATH_REFUSED``,
        ``ADMIN_ONLY``). Loading a bundle can take a while: pass a ``timeout`` long enough for it."""
        try:
            response: admin_pb2.PromoteBundleResponse = self._admin.PromoteBundle(
                admin_pb2.PromoteBundleRequest(path=path),
                timeout=timeout or self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response


def _result(index: int, answer: analysis_pb2.AnalyzeStreamResponse) -> StreamResult:
    if answer.WhichOneof("outcome") == "error":
        return StreamResult(index, answer.request_id, None, from_detail(answer.error))
    return StreamResult(index, answer.request_id, answer.result, None)
