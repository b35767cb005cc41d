"""Typed Python client of the Hemascope gateway (``AnalysisService``, and ``GatewayAdminService``'s
``promote_bundle`` for admin keys), blocking and asyncio.

::

    from hemascope.client import HemascopeClient, TlsConfig, InvalidImage

    with HemascopeClient("gateway:50050", api_key=key, tls=TlsConfig(ca=Path("ca.pem"))) as client:
        report = client.analyze(Path("cell.jpg"), detect=True, explain=True)
        for result in client.analyze_many(paths):
            ...

The generated messages and stubs are in :mod:`hemascope.client.stubs` (= :mod:`hemascope.v1`).
"""

from hemascope.client.aio import AsyncHemascopeClient
from hemascope.client.common import StreamResult, TlsConfig
from hemascope.client.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    HemascopeClientError,
    InternalError,
    InvalidArgument,
    InvalidImage,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceUnavailable,
    Unauthenticated,
)
from hemascope.client.sync import HemascopeClient

__all__ = [
    "AsyncHemascopeClient",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HemascopeClient",
    "HemascopeClientError",
    "InternalError",
    "InvalidArgument",
    "InvalidImage",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceUnavailable",
    "StreamResult",
    "TlsConfig",
    "Unauthenticated",
]
