"""The thin gRPC layer of the gateway's GatewayAdminService (administrative calls, admin callers only).

Only a caller whose API key has the role ``admin`` (:mod:`gateway.auth`) may call it; anyone else is
refused with PERMISSION_DENIED (reason ADMIN_ROLE_REQUIRED) before anything is done. Every call is one
record of the audit trail (the interceptor leaves it to this servicer): the caller, ``rpc``
``PromoteBundle``, the bundle path in ``options.path`` and, when it succeeded, the versions served after
and before in ``model_versions`` (``classifier`` and ``previous_classifier``).

A promotion that succeeded but cannot be audited (the trail went down during the call) has already changed
what the classifier serves: it is logged at ERROR with the versions and the caller, and the call fails
with UNAVAILABLE so the admin knows the record is missing.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from gateway.dataplane import DataPlane
from gateway.identity import Caller
from gateway.interceptor import caller_of
from gateway.promotion import BundlePromoter, Promotion
from hemascope.deadlines import remaining_seconds
from hemascope.errors import HemascopeError, PermissionDenied
from hemascope.logs import get_logger
from hemascope.v1 import admin_pb2, admin_pb2_grpc

log = get_logger(__name__)

PROMOTE_RPC = "PromoteBundle"
ADMIN_ROLE_REQUIRED = "ADMIN_ROLE_REQUIRED"


class GatewayAdminServicer(admin_pb2_grpc.GatewayAdminServiceServicer):
    def __init__(
        self, plane: DataPlane, promoter: BundlePromoter, on_promoted: Callable[[], None] = lambda: None
    ) -> None:
        self._plane = plane
        self._promoter = promoter
        self._on_promoted = on_promoted

    def PromoteBundle(  # noqa: N802 (gRPC method name)
        self, request: admin_pb2.PromoteBundleRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PromoteBundleResponse:
        caller = caller_of(context)
        started = self._plane.now()
        options = {"path": request.path}
        try:
            if not caller.admin:
                log.warning("admin_refused", rpc=PROMOTE_RPC, caller=caller.id, peer=caller.peer)
                raise PermissionDenied(
                    f"{PROMOTE_RPC} is administrative: call it with an API key whose role is admin",
                    reason=ADMIN_ROLE_REQUIRED,
                )
            promotion = self._promoter.promote(request.path, remaining_seconds(context))
        except HemascopeError as exc:
            self._plane.record_quietly(caller, PROMOTE_RPC, exc.code.name, started, options)
            raise
        self._on_promoted()
        log.info(
            "bundle_promoted",
            caller=caller.id,
            version=promotion.bundle_version,
            previous=promotion.previous_version,
        )
        self._audit_success(caller, promotion, started, options)
        return admin_pb2.PromoteBundleResponse(
            bundle_version=promotion.bundle_version,
            previous_version=promotion.previous_version,
            model_count=promotion.model_count,
        )

    def _audit_success(
        self, caller: Caller, promotion: Promotion, started: float, options: dict[str, str]
    ) -> None:
        try:
            self._plane.record(
                caller,
                PROMOTE_RPC,
                "OK",
                started=started,
                options=options,
                model_versions={
                    "classifier": promotion.bundle_version,
                    "previous_classifier": promotion.previous_version,
                },
            )
        except HemascopeError:
            log.error(
                "promotion_not_audited",
                caller=caller.id,
                version=promotion.bundle_version,
                previous=promotion.previous_version,
                detail="the classifier serves the promoted bundle, but the audit trail could not record it",
            )
            raise
