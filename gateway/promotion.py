"""Promoting a bundle to serving: the gateway calls the classifier's administrative ``ReloadBundle``.

The classifier answers ReloadBundle only for a client certificate whose common name is in its
``ADMIN_SUBJECTS``, so the gateway presents its admin identity (``admin_cert_file``/``admin_key_file``,
trusted with ``downstream_ca_file``) on a channel of its own, used for nothing else; without one it presents
its own downstream identity. The call is never retried (a reload is not idempotent in what it logs and
counts, and a retry could race a second promotion), and its timeout is ``promote_timeout_s`` or the
caller's shorter deadline.

The classifier's refusals keep their status code and reason (:func:`promotion_error`): FAILED_PRECONDITION
(BAD_BUNDLE: the bundle did not load, the previous one keeps serving), INVALID_ARGUMENT (BAD_PATH),
PERMISSION_DENIED (RELOAD_PATH_REFUSED, or ADMIN_ONLY when it does not accept the gateway's identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway.downstream import ServiceNotRunning, domain_error, remote_detail, status_code
from gateway.settings import GatewaySettings
from gateway.tls import ENV_PREFIX, channel_credentials
from hemascope import errors
from hemascope.tls import pem_pair, read_pem
from hemascope.v1 import classifier_pb2, classifier_pb2_grpc

SERVICE = "classifier"


@dataclass(frozen=True)
class Promotion:
    """What a promotion did: the bundle now serving, the one before, and its model count."""

    bundle_version: str
    previous_version: str
    model_count: int


def admin_credentials(settings: GatewaySettings) -> grpc.ChannelCredentials | None:
    """Credentials of the promotion channel: the admin certificate when set, else the gateway's own
    downstream credentials (None: plaintext). Unreadable files are a ConfigurationError naming the setting."""
    pair = pem_pair(
        settings.admin_cert_file,
        settings.admin_key_file,
        f"{ENV_PREFIX}ADMIN_CERT_FILE",
        f"{ENV_PREFIX}ADMIN_KEY_FILE",
    )
    if pair is None:
        return channel_credentials(settings)
    ca = settings.downstream_ca_file
    root = read_pem(ca, f"{ENV_PREFIX}DOWNSTREAM_CA_FILE") if ca is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=pair[1], certificate_chain=pair[0]
    )


def promotion_error(error: grpc.RpcError, by_caller_deadline: bool) -> errors.HemascopeError:
    """The domain error for a failed ReloadBundle, keeping the classifier's code and reason; a refusal of
    the gateway's identity stays PERMISSION_DENIED (it is the promotion that is refused) and says which
    setting to fix."""
    code = status_code(error)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        detail = remote_detail(error)
        reason = detail.reason if detail is not None else code.name
        message = detail.message if detail is not None else code.name
        text = f"the classifier service refused the promotion: {message}"
        if reason == "ADMIN_ONLY" or code is grpc.StatusCode.UNAUTHENTICATED:
            text += (
                f"; it must accept the gateway's admin identity ({ENV_PREFIX}ADMIN_CERT_FILE, named in the "
                "classifier's ADMIN_SUBJECTS)"
            )
        return errors.PermissionDenied(text, reason=reason, field=detail.field if detail is not None else "")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        whose = "the caller's deadline" if by_caller_deadline else f"{ENV_PREFIX}PROMOTE_TIMEOUT_S"
        return errors.DeadlineExceeded(
            f"the classifier did not finish loading the bundle within {whose}; it may still swap it in: "
            "check GetCapabilities' bundle_version",
            reason="DEADLINE_EXCEEDED",
        )
    return domain_error(SERVICE, error, by_caller_deadline)


class BundlePromoter:
    """Calls the classifier's ReloadBundle on a channel of its own; thread-safe."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._timeout_s = settings.promote_timeout_s
        self._channel: grpc.Channel | None = None
        address = settings.classifier_address.strip()
        if address:
            credentials = admin_credentials(settings)
            self._channel = (
                grpc.secure_channel(address, credentials)
                if credentials is not None
                else grpc.insecure_channel(address)
            )
        self._stub = (
            classifier_pb2_grpc.ClassifierServiceStub(self._channel) if self._channel is not None else None
        )

    def promote(self, path: str, deadline_s: float | None) -> Promotion:
        """Makes the classifier serve the bundle at ``path`` (empty: reload the one it serves)."""
        if self._stub is None:
            raise ServiceNotRunning(
                "the classifier service is not running (the gateway was started without it)"
            )
        by_caller = deadline_s is not None and deadline_s <= self._timeout_s
        timeout = deadline_s if by_caller and deadline_s is not None else self._timeout_s
        if timeout <= 0:
            raise errors.DeadlineExceeded(
                "no time left of the caller's deadline to promote the bundle", reason="DEADLINE_EXCEEDED"
            )
        try:
            reply: classifier_pb2.ReloadBundleResponse = self._stub.ReloadBundle(
                classifier_pb2.ReloadBundleRequest(path=path), timeout=timeout
            )
        except grpc.RpcError as exc:
            raise promotion_error(exc, by_caller) from None
        return Promotion(reply.bundle_version, reply.previous_version, reply.model_count)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
