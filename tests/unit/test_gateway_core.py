"""The gateway's downstream policy (deadline propagation, retries, breaker, error mapping) and the core's
own checks, with every downstream service down (real channels to closed ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

from gateway.breaker import CircuitBreaker, CircuitOpen
from gateway.core import GatewayCore
from gateway.domain import AnalyzeOptions
from gateway.downstream import Deadline, Downstream, RetryPolicy, call_timeout, domain_error
from gateway.settings import GatewaySettings
from hemascope.errors import (
    DeadlineExceeded,
    InvalidArgument,
    InvalidImage,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from hemascope.imaging.inputs import ImageInput
from hemascope.v1 import common_pb2
from tests.gateway_helpers import closed_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Failure(grpc.RpcError):
    """A failed call as grpc raises it (code, details, trailing metadata)."""

    def __init__(
        self, code: grpc.StatusCode, details: str = "", detail: common_pb2.ErrorDetail | None = None
    ):
        self._code, self._details, self._trailing = code, details, ()
        if detail is not None:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status = status_pb2.Status(code=code.value[0], message=details, details=[packed])
            self._trailing = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


class Method:
    """A downstream method: records each call's timeout and the clock; fails with ``failures`` first."""

    def __init__(self, clock: Clock, failures: list[Failure], takes: float = 0.0) -> None:
        self.clock, self.failures, self.takes = clock, list(failures), takes
        self.calls: list[tuple[float, float]] = []  # (time called, timeout)

    def __call__(self, request: str, *, timeout: float) -> str:
        self.calls.append((self.clock.now, timeout))
        self.clock.now += min(self.takes, timeout)
        if self.failures:
            raise self.failures.pop(0)
        return f"answer to {request}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> Iterator[Downstream[object]]:
    channel = grpc.insecure_channel("127.0.0.1:9")
    breaker = CircuitBreaker("detector", 3, 10.0, clock)
    retry = RetryPolicy(2, 0.1, sleep=clock.sleep, jitter=lambda: 0.5)
    yield Downstream("detector", channel, lambda ch: object(), breaker, retry, cap_s=30.0)
    channel.close()


def unavailable() -> Failure:
    return Failure(grpc.StatusCode.UNAVAILABLE, "connection refused")


def test_call_timeout_is_the_smaller_of_the_callers_remaining_deadline_and_the_cap(clock: Clock) -> None:
    assert call_timeout(Deadline.after(None, clock), 30.0) == (30.0, False)
    assert call_timeout(Deadline.after(3.0, clock), 30.0) == (3.0, True)
    assert call_timeout(Deadline.after(300.0, clock), 30.0) == (30.0, False)
    deadline = Deadline.after(3.0, clock)
    clock.now += 5
    assert deadline.remaining() == 0.0


def test_every_attempt_gets_at_most_the_remaining_deadline(clock: Clock, service: Downstream[object]) -> None:
    method = Method(clock, [unavailable(), unavailable()], takes=0.4)
    deadline = Deadline.after(2.0, clock)
    assert service.call(method, "x", deadline) == "answer to x"
    assert len(method.calls) == 3
    for called_at, timeout in method.calls:
        assert timeout <= deadline.expires_at - called_at + 1e-9  # type: ignore[operator]
    assert [round(t, 3) for _, t in method.calls] == [2.0, 1.5, 0.9]  # 0.4 taken, backoff 0.1 then 0.2


def test_no_retry_past_the_deadline_and_no_call_after_it(clock: Clock, service: Downstream[object]) -> None:
    method = Method(clock, [unavailable()] * 3, takes=0.45)
    with pytest.raises(Unavailable) as info:
        service.call(method, "x", Deadline.after(0.5, clock))
    assert len(method.calls) == 1  # 0.05 s left, less than the 0.1 s backoff: give up
    assert info.value.reason == "SERVICE_UNAVAILABLE"
    expired = Deadline.after(1.0, clock)
    clock.now += 2
    with pytest.raises(DeadlineExceeded):
        service.call(method, "x", expired)
    assert len(method.calls) == 1


def test_only_idempotent_calls_on_transient_codes_are_retried(
    clock: Clock, service: Downstream[object]
) -> None:
    method = Method(clock, [unavailable(), unavailable()])
    with pytest.raises(Unavailable):
        service.call(method, "x", Deadline.after(None, clock), idempotent=False)
    assert len(method.calls) == 1
    bad = common_pb2.ErrorDetail(code=3, reason="CORRUPT_IMAGE", message="not an image", field="image.data")
    method = Method(clock, [Failure(grpc.StatusCode.INVALID_ARGUMENT, "not an image", bad)])
    with pytest.raises(InvalidArgument) as info:
        service.call(method, "x", Deadline.after(None, clock))
    assert len(method.calls) == 1
    assert (info.value.reason, info.value.field) == ("CORRUPT_IMAGE", "image.data")
    assert info.value.message == "detector service: not an image"
    busy = common_pb2.ErrorDetail(code=8, reason="QUEUE_FULL", message="busy")
    method = Method(clock, [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", busy)])
    assert service.call(method, "x", Deadline.after(None, clock)) == "answer to x"
    too_big = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max")
    method = Method(clock, [too_big])
    with pytest.raises(ResourceExhausted, match="larger than max"):
        service.call(method, "x", Deadline.after(None, clock))
    assert len(method.calls) == 1


def test_the_breaker_opens_and_then_fails_fast_without_calling(
    clock: Clock, service: Downstream[object]
) -> None:
    method = Method(clock, [unavailable()] * 3)
    with pytest.raises(Unavailable):
        service.call(method, "x", Deadline.after(None, clock))  # 3 attempts = 3 consecutive failures
    assert service.breaker.is_open
    with pytest.raises(CircuitOpen) as info:
        service.call(method, "x", Deadline.after(None, clock))
    assert info.value.reason == "CIRCUIT_OPEN"
    assert len(method.calls) == 3
    clock.now += 10
    assert service.call(method, "x", Deadline.after(None, clock)) == "answer to x"  # the trial call
    assert not service.breaker.is_open


def test_the_callers_short_deadline_does_not_count_against_the_service(
    clock: Clock, service: Downstream[object]
) -> None:
    late = Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    for _ in range(5):
        with pytest.raises(DeadlineExceeded) as info:
            service.call(Method(clock, [late]), "x", Deadline.after(1.0, clock))
    assert "caller's deadline" in info.value.message
    assert not service.breaker.is_open
    for _ in range(3):  # the gateway's own cap expiring does: the service hangs
        with pytest.raises(DeadlineExceeded):
            service.call(Method(clock, [late]), "x", Deadline.after(None, clock))
    assert service.breaker.is_open


def test_internal_errors_never_pass_a_remote_message_on() -> None:
    error = domain_error("explain", Failure(grpc.StatusCode.INTERNAL, "Traceback: secret"), False)
    assert error.code is grpc.StatusCode.INTERNAL
    assert "secret" not in error.message and error.reason == "SERVICE_INTERNAL"
    assert isinstance(domain_error("x", Failure(grpc.StatusCode.NOT_FOUND, "no model"), False), NotFound)


# ---------------------------------------------------------------- the core, every service down


@pytest.fixture(scope="module")
def core() -> Iterator[GatewayCore]:
    settings = GatewaySettings(
        port=0,
        metrics_port=None,
        feature_address=closed_port(),
        classifier_address=closed_port(),
        detector_address=closed_port(),
        explain_address=closed_port(),
        max_image_bytes=64 * 1024,
        retry_backoff_ms=1,
        breaker_failures=1000,
        health_timeout_s=1,
    )
    gateway = GatewayCore(settings)
    gateway.load()  # must not fail: the services are down
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def cell(data_dir: Path) -> bytes:
    return sorted((data_dir / "bloodcells-5class" / "val" / "monocyte").glob("*.jpg"))[0].read_bytes()


def test_load_succeeds_and_reports_every_service_down(core: GatewayCore) -> None:
    caps = core.capabilities()
    assert [(s.name, s.serving) for s in caps.services] == [
        ("feature", False),
        ("classifier", False),
        ("detector", False),
        ("explain", False),
    ]
    assert caps.models == () and caps.detector_version == ""
    assert caps.max_image_bytes == 64 * 1024 and caps.max_stream_in_flight == 8


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (AnalyzeOptions(skip_classification=True), "options"),
        (AnalyzeOptions(skip_classification=True, detect=True, explain=True), "options.explain"),
        (AnalyzeOptions(detect=True, detect_confidence=1.5), "options.detect_confidence"),
        (AnalyzeOptions(detect_iou=float("nan")), "options.detect_iou"),
        (AnalyzeOptions(malignant_threshold=0.0), "options.malignant_threshold"),
    ],
)
def test_bad_options_are_refused_before_any_downstream_call(
    core: GatewayCore, cell: bytes, options: AnalyzeOptions, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        core.analyze(ImageInput(cell), options, 5.0)
    assert info.value.field == field


def test_bad_images_are_refused_by_the_gateway_itself(core: GatewayCore, cell: bytes) -> None:
    for data, reason in (
        (cell[: len(cell) // 2], "CORRUPT_IMAGE"),
        (b"", "EMPTY_IMAGE"),
        (b"x" * 70_000, ""),
    ):
        with pytest.raises(InvalidImage) as info:
            core.analyze(ImageInput(data), AnalyzeOptions(), 5.0)
        if reason:
            assert info.value.reason in (reason, "EMPTY", "TRUNCATED", "CORRUPT")


def test_every_service_down_gives_a_report_of_failed_parts(core: GatewayCore, cell: bytes) -> None:
    report = core.analyze(ImageInput(cell, image_id="id-1"), AnalyzeOptions(detect=True, explain=True), 10.0)
    assert report.image_id == "id-1" and len(report.content_hash) == 64
    assert (report.width, report.height) == (360, 363)
    status = {p.part: p for p in report.parts}
    assert [p.part for p in report.parts] == ["embedding", "classification", "detection", "explanation"]
    assert status["embedding"].code is grpc.StatusCode.UNAVAILABLE
    assert status["detection"].code is grpc.StatusCode.UNAVAILABLE
    for part in ("classification", "explanation"):
        assert status[part].code is grpc.StatusCode.FAILED_PRECONDITION
        assert "embedding" in status[part].message
    assert report.outcome == "failed"
    assert report.classification is None and report.detection is None and report.explanation is None
    assert {"decode", "embedding", "detection", "total"} <= set(report.timings)


def test_downstream_calls_keep_a_reserve_of_the_callers_deadline_for_the_answer(core: GatewayCore) -> None:
    assert core._budget(None) is None
    assert core._budget(2.0) == pytest.approx(1.9)  # 100 ms reserve
    assert core._budget(0.25) == pytest.approx(0.2)  # at most 20 % of a short deadline
