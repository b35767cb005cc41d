"""Clients of the downstream services: deadlines, retries with backoff, circuit breaking, error mapping.

Every call's timeout is ``min(time left of the caller's deadline, downstream_timeout_s)``; a call is never
started (nor retried) past the caller's deadline. Only idempotent calls are retried (the services'
inference and describe calls are pure functions of their input; ``ReloadBundle`` is never called from
here), and only on UNAVAILABLE or a service's own RESOURCE_EXHAUSTED overload answer, with exponential
backoff and +-50% jitter. Each service has its own :class:`~gateway.breaker.CircuitBreaker`. Failures come
back as domain errors (hemascope.errors) keeping the service's status code, reason and message.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import metrics
from gateway.breaker import CircuitBreaker
from gateway.settings import GatewaySettings
from gateway.tls import channel_credentials
from hemascope import errors
from hemascope.tracing import OFF, Tracing
from hemascope.v1 import (
    classifier_pb2_grpc,
    common_pb2,
    detector_pb2_grpc,
    explain_pb2_grpc,
    feature_pb2_grpc,
)

R = TypeVar("R")
S = TypeVar("S")

_DETAILS_KEY = "grpc-status-details-bin"
#: Codes that say the service itself is unwell (they count against its breaker).
_UNHEALTHY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
_UNHEALTHY |= {grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED}


@dataclass(frozen=True)
class Deadline:
    """An absolute deadline on the monotonic clock; ``expires_at`` None means the caller set none."""

    expires_at: float | None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if seconds is None else clock() + seconds, clock)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        return None if self.expires_at is None else max(0.0, self.expires_at - self.clock())


def call_timeout(deadline: Deadline, cap_s: float) -> tuple[float, bool]:
    """The timeout of the next downstream call and whether the caller's deadline (not the cap) set it."""
    remaining = deadline.remaining()
    if remaining is not None and remaining <= cap_s:
        return remaining, True
    return cap_s, False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent calls are retried."""

    retries: int = 2
    backoff_s: float = 0.05
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        """Pause before retry ``attempt`` (1-based): backoff * 2^(attempt-1) * U(0.5, 1.5)."""
        return float(self.backoff_s * (2 ** (attempt - 1)) * (0.5 + self.jitter()))


def remote_detail(error: grpc.RpcError) -> common_pb2.ErrorDetail | None:
    """The ErrorDetail a Hemascope service packed into the failed call's status, if any."""
    trailing: Sequence[tuple[str, Any]] = getattr(error, "trailing_metadata", lambda: None)() or ()
    for key, value in trailing:
        if key != _DETAILS_KEY:
            continue
        try:
            status = status_pb2.Status.FromString(value)
            detail = common_pb2.ErrorDetail()
            if status.details and status.details[0].Unpack(detail):
                return detail
        except Exception:  # malformed details: fall back to the bare status
            return None
    return None


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(error, "code", lambda: grpc.StatusCode.UNKNOWN)()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def domain_error(service: str, error: grpc.RpcError, by_caller_deadline: bool) -> errors.HemascopeError:
    """The domain error for a failed call to ``service``, keeping its code, reason and message."""
    code = status_code(error)
    detail = remote_detail(error)
    details = getattr(error, "details", lambda: "")() or ""
    cls = errors.error_class(code)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        # The service refused the *gateway*, not the caller: a deployment fault, not the caller's.
        return errors.HemascopeError(
            f"the {service} service refused the gateway's credentials ({code.name}); check the "
            "downstream certificates",
            reason="SERVICE_REFUSED_GATEWAY",
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        whose = "the caller's deadline" if by_caller_deadline else "the gateway's downstream timeout"
        return cls(f"the {service} service did not answer within {whose}", reason="DEADLINE_EXCEEDED")
    if code is grpc.StatusCode.UNAVAILABLE and detail is None:
        return cls(f"the {service} service is unavailable", reason="SERVICE_UNAVAILABLE")
    if detail is not None:
        return cls(f"{service} service: {detail.message}", reason=detail.reason, field=detail.field)
    if cls is errors.HemascopeError:  # INTERNAL, UNKNOWN, ...: never pass a remote traceback on
        return cls(f"the {service} service failed ({code.name})", reason=f"SERVICE_{code.name}")
    return cls(f"{service} service: {details}", reason=code.name)


class ServiceNotRunning(errors.Unavailable):
    """The gateway runs without this service: its parts fail at once, and its breaker is never involved."""

    default_reason = "NOT_RUNNING"


class Downstream(Generic[S]):
    """One downstream service: its channel, stub, breaker and call policy.

    Without a channel (no address configured) the service is *absent*: every call, and reading ``stub``,
    raises :class:`ServiceNotRunning`, and its health check says not serving.
    """

    def __init__(
        self,
        name: str,
        channel: grpc.Channel | None,
        stub_factory: Callable[[grpc.Channel], S],
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        cap_s: float,
    ) -> None:
        self.name = name
        self.channel = channel
        self._stub: S | None = stub_factory(channel) if channel is not None else None
        self.breaker = breaker
        self.retry = retry
        self.cap_s = cap_s
        self._health = health_pb2_grpc.HealthStub(channel) if channel is not None else None
        self._lock = threading.Lock()
        self._last_ok: bool | None = None
        self.generation = 0
        """Bumped whenever calls start or stop succeeding (so cached capabilities can be refreshed)."""

    @property
    def absent(self) -> bool:
        """True when the gateway runs without this service."""
        return self.channel is None

    @property
    def stub(self) -> S:
        if self._stub is None:
            raise self.not_running()
        return self._stub

    def not_running(self) -> ServiceNotRunning:
        return ServiceNotRunning(
            f"the {self.name} service is not running (the gateway was started without it)"
        )

    def call(
        self, method: Callable[..., R], request: Any, deadline: Deadline, *, idempotent: bool = True
    ) -> R:
        """Calls ``method(request, timeout=...)`` under the deadline, breaker and retry policy."""
        if self.absent:
            raise self.not_running()
        attempt = 0
        while True:
            timeout, by_caller = call_timeout(deadline, self.cap_s)
            if timeout <= 0:
                raise errors.DeadlineExceeded(
                    f"no time left of the caller's deadline to call the {self.name} service",
                    reason="DEADLINE_EXCEEDED",
                )
            self.breaker.before_call()
            try:
                result: R = method(request, timeout=timeout)
            except grpc.RpcError as exc:
                error = self._record_failure(exc, by_caller)
                if not idempotent or attempt >= self.retry.retries or not self._retryable(exc):
                    raise error from None
                attempt += 1
                pause = self.retry.delay(attempt)
                remaining = deadline.remaining()
                if remaining is not None and remaining <= pause:
                    raise error from None
                metrics.DOWNSTREAM_RETRIES.labels(self.name).inc()
                self.retry.sleep(pause)
            else:
                self.breaker.record_success()
                self._note(True)
                return result

    def check_health(self, timeout_s: float) -> bool:
        """True when the service's health check answers SERVING (bypasses the breaker)."""
        if self._health is None:
            return False
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def _record_failure(self, exc: grpc.RpcError, by_caller: bool) -> errors.HemascopeError:
        code = status_code(exc)
        if code in _UNHEALTHY or (code is grpc.StatusCode.DEADLINE_EXCEEDED and not by_caller):
            self.breaker.record_failure()
            self._note(False)
        elif code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED):
            self.breaker.record_neutral()  # the caller's short deadline or a busy service: no verdict
        else:
            self.breaker.record_success()  # it answered (e.g. INVALID_ARGUMENT): the service is alive
            self._note(True)
        return domain_error(self.name, exc, by_caller)

    @staticmethod
    def _retryable(exc: grpc.RpcError) -> bool:
        code = status_code(exc)
        if code is grpc.StatusCode.UNAVAILABLE:
            return True
        # A service's own overload answer carries an ErrorDetail; gRPC's message-size RESOURCE_EXHAUSTED
        # does not, and retrying it would fail the same way.
        return code is grpc.StatusCode.RESOURCE_EXHAUSTED and remote_detail(exc) is not None

    def _note(self, ok: bool) -> None:
        with self._lock:
            if self._last_ok is not ok:
                self._last_ok = ok
                self.generation += 1


@dataclass
class Downstreams:
    """The four services the gateway calls."""

    feature: Downstream[feature_pb2_grpc.FeatureServiceStub]
    classifier: Downstream[classifier_pb2_grpc.ClassifierServiceStub]
    detector: Downstream[detector_pb2_grpc.DetectorServiceStub]
    explain: Downstream[explain_pb2_grpc.ExplainServiceStub]

    def all(self) -> tuple[Downstream[Any], ...]:
        return (self.feature, self.classifier, self.detector, self.explain)

    def close(self) -> None:
        for service in self.all():
            service.close()


def open_downstreams(
    settings: GatewaySettings, clock: Callable[[], float] = time.monotonic, tracing: Tracing = OFF
) -> Downstreams:
    """Channels (TLS when the settings name downstream certificates) and breakers for every service.

    With ``tracing`` on, each call gets a client span and carries the trace context to the service.

    Channels connect lazily, so this never fails because a service is down. A service whose address is
    empty is absent (see :class:`Downstream`).
    """
    credentials = channel_credentials(settings)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Reconnect soon after a service comes back (the breaker already stops the gateway hammering it).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        # Spread calls over every address a name resolves to (a headless Kubernetes Service's pods);
        # gRPC's default, pick_first, would send everything to one pod.
        ("grpc.lb_policy_name", "round_robin"),
    ]
    retry = RetryPolicy(settings.retries, settings.retry_backoff_ms / 1000)

    def make(name: str, address: str, stub: Callable[[grpc.Channel], S]) -> Downstream[S]:
        channel: grpc.Channel | None = None
        if not address.strip():
            channel = None  # absent: the gateway runs without this service
        elif credentials is not None:
            channel = grpc.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        if channel is not None:
            channel = tracing.intercept_channel(channel)
        breaker = CircuitBreaker(
            name, settings.breaker_failures, settings.breaker_reset_s, clock, metrics.breaker_changed
        )
        metrics.BREAKER_STATE.labels(name).set(0)
        return Downstream(name, channel, stub, breaker, retry, settings.downstream_timeout_s)

    return Downstreams(
        feature=make("feature", settings.feature_address, feature_pb2_grpc.FeatureServiceStub),
        classifier=make("classifier", settings.classifier_address, classifier_pb2_grpc.ClassifierServiceStub),
        detector=make("detector", settings.detector_address, detector_pb2_grpc.DetectorServiceStub),
        explain=make("explain", settings.explain_address, explain_pb2_grpc.ExplainServiceStub),
    )
