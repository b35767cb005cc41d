"""The asyncio client of the Hemascope gateway (``grpc.aio``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
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


class AsyncHemascopeClient:
    """The asyncio twin of :class:`~hemascope.client.HemascopeClient`; create it inside a running loop.

    >>> async with AsyncHemascopeClient("127.0.0.1:50050") as client:
    ...     report = await client.analyze(Path("cell.jpg"), detect=True)
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
            grpc.aio.secure_channel(address, tls.credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(address, options=options)
        )
        self._stub = analysis_pb2_grpc.AnalysisServiceStub(self._channel)
        self._admin = admin_pb2_grpc.GatewayAdminServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncHemascopeClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until the gateway's health check says SERVING; DeadlineExceeded after ``timeout``."""
        health = health_pb2_grpc.HealthStub(self._channel)
        until = time.monotonic() + timeout
        while True:
            left = until - time.monotonic()
            try:
                status = await health.Check(health_pb2.HealthCheckRequest(), timeout=max(0.1, min(2.0, left)))
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() + 0.25 > until:
                raise DeadlineExceeded(f"the gateway at {self.address} was not SERVING after {timeout} s")
            await asyncio.sleep(0.25)

    async def analyze(
        self,
        image: ImageSource,
        *,
        options: analysis_pb2.AnalyzeOptions | None = None,
        image_id: str | None = None,
        media_type: str = "",
        timeout: float | None = None,
        **fields: Any,
    ) -> analysis_pb2.AnalyzeResponse:
        """Analyses one image; see :meth:`hemascope.client.HemascopeClient.analyze`."""
        request = analyze_request(image, options, image_id, media_type, fields)
        try:
            response: analysis_pb2.AnalyzeResponse = await self._stub.Analyze(
                request, timeout=timeout or self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    async def analyze_many(
        self,
        images: Iterable[ImageSource] | AsyncIterable[ImageSource],
        *,
        options: analysis_pb2.AnalyzeOptions | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> AsyncIterator[StreamResult]:
        """Analyses ``images`` over one ``AnalyzeStream``; yields results as they finish (use
        ``result.index``); see :meth:`hemascope.client.HemascopeClient.analyze_many`."""
        base = analyze_options(options, **fields)
        indexes: dict[str, int] = {}

        async def sources() -> AsyncIterator[ImageSource]:
            if isinstance(images, AsyncIterable):
                async for image in images:
                    yield image
            else:
                for image in images:
                    yield image

        async def requests() -> AsyncIterator[analysis_pb2.AnalyzeStreamRequest]:
            index = 0
            async for image in sources():
                request = analyze_request(image, base, None, "", {})
                indexes[str(index)] = index
                yield analysis_pb2.AnalyzeStreamRequest(request_id=str(index), request=request)
                index += 1

        call = self._stub.AnalyzeStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for answer in call:
                index = indexes.pop(answer.request_id, -1)
                if answer.WhichOneof("outcome") == "error":
                    yield StreamResult(index, answer.request_id, None, from_detail(answer.error))
                else:
                    yield StreamResult(index, answer.request_id, answer.result, None)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def capabilities(self, *, timeout: float | None = None) -> analysis_pb2.GetCapabilitiesResponse:
        """Classes, models, versions, limits and the health of every downstream service."""
        try:
            response: analysis_pb2.GetCapabilitiesResponse = await self._stub.GetCapabilities(
                analysis_pb2.GetCapabilitiesRequest(),
                timeout=timeout or self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    async def promote_bundle(
        self, path: str, *, timeout: float | None = None
    ) -> admin_pb2.PromoteBundleResponse:
        """Makes the classifier serve the bundle at ``path`` (as the classifier service sees it; empty:
        reload the bundle it serves) through the gateway's ``GatewayAdminService.PromoteBundle``. Needs an
        API key whose role is admin (else PermissionDenied, reason ``ADMIN_ROLE_REQUIRED``); the
        classifier's refusals raise with its reason: FailedPrecondition (``BAD_BUNDLE``, the previous bundle
        keeps serving), InvalidArgument (``BAD_PATH``), PermissionDenied (``RELOAD_PATH_REFUSED``,
        ``ADMIN_ONLY``). Loading a bundle can take a while: pass a ``timeout`` long enough for it."""
        try:
            response: admin_pb2.PromoteBundleResponse = await self._admin.PromoteBundle(
                admin_pb2.PromoteBundleRequest(path=path),
                timeout=timeout or self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response
