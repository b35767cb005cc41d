"""The gateway's data plane with a fake core: audit of every call and of refusals (with the peer), failing
closed while the audit trail cannot be written and recovering, per-connection limits for anonymous callers,
and KServe batches that stop at their first failure."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.audit import AuditLog, AuditRecord, verify
from gateway.audit_trail import RESUMED_RPC, AuditTrail
from gateway.auth import ApiKeyStore, add_key
from gateway.dataplane import BoundedRunner, DataPlane
from gateway.domain import AnalysisReport, AnalyzeOptions, Capabilities, PartStatus
from gateway.identity import Caller, Identifier
from gateway.limits import StreamLimiter
from hemascope.errors import InvalidImage, ResourceExhausted, Unauthenticated, Unavailable
from hemascope.imaging.inputs import ImageInput
from hemascope.tracing import TracingConfig, current_trace_id, setup_tracing
from tests.log_helpers import captured_events

PEER = "ipv4:10.1.2.3:40000"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyWriter:
    """``os.write`` that fails with ENOSPC while ``full`` is set, counting its calls."""

    def __init__(self) -> None:
        self.full = False
        self.calls = 0

    def __call__(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.full:
            raise OSError(28, "No space left on device")
        return os.write(fd, data)


class FakeCore:
    """Analyses 'good' images; fails images whose bytes start with b'bad'; blocks images starting with
    b'slow' until released. Counts every analysis started."""

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def capabilities(self) -> Capabilities:
        return Capabilities(classes=("a", "b"))

    def analyze(self, image: ImageInput, options: AnalyzeOptions, deadline_s: float | None) -> AnalysisReport:
        with self.lock:
            self.started.append(image.data)
        if image.data.startswith(b"bad"):
            raise InvalidImage("not an image")
        if image.data.startswith(b"slow"):
            self.release.wait(30)
        report = AnalysisReport("", hashlib.sha256(image.data).hexdigest(), 1, 1)
        report.parts.append(PartStatus("embedding", grpc.StatusCode.OK, "", "", 1.0))
        return report


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(16)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


def make_plane(
    core: FakeCore,
    executor: ThreadPoolExecutor,
    audit: AuditTrail | None = None,
    store: ApiKeyStore | None = None,
    parallel: int = 4,
    capacity: int = 64,
) -> DataPlane:
    return DataPlane(
        core,
        Identifier(store, required=store is not None),
        StreamLimiter(1),
        BoundedRunner(executor, capacity),
        parallel,
        audit,
    )


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_failed_batch_stops_at_once_and_sends_nothing_more(executor: ThreadPoolExecutor) -> None:
    core = FakeCore()
    plane = make_plane(core, executor, parallel=4)
    images = [ImageInput(b"bad-0")] + [ImageInput(b"slow-%d" % i) for i in range(1, 64)]
    try:
        with pytest.raises(InvalidImage) as info:
            plane.analyze_batch(
                Caller("lab"), "ModelInfer", images, AnalyzeOptions(), None, {}, field="IMAGE"
            )
    finally:
        core.release.set()
    assert info.value.message.startswith("image 0:")
    assert info.value.field == "IMAGE[0]"
    # Only the first `parallel` images were ever started: the other 60 never reach the services.
    assert sorted(core.started) == sorted([b"bad-0", b"slow-1", b"slow-2", b"slow-3"])


def test_a_batch_runs_every_image_in_order_when_all_succeed(executor: ThreadPoolExecutor) -> None:
    core = FakeCore()
    plane = make_plane(core, executor, parallel=3)
    images = [ImageInput(b"img-%d" % i) for i in range(10)]
    reports = plane.analyze_batch(Caller("lab"), "ModelInfer", images, AnalyzeOptions(), None, {})
    assert [r.content_hash for r in reports] == [hashlib.sha256(i.data).hexdigest() for i in images]


def test_batch_work_beyond_the_gateways_capacity_is_refused(executor: ThreadPoolExecutor) -> None:
    core = FakeCore()
    runner = BoundedRunner(executor, 2)
    runner.submit(lambda: core.analyze(ImageInput(b"slow-a"), AnalyzeOptions(), None))
    runner.submit(lambda: core.analyze(ImageInput(b"slow-b"), AnalyzeOptions(), None))
    try:
        with pytest.raises(ResourceExhausted) as info:
            runner.submit(lambda: core.analyze(ImageInput(b"c"), AnalyzeOptions(), None))
        assert info.value.reason == "GATEWAY_BUSY"
    finally:
        core.release.set()


def test_every_batch_image_and_every_refusal_is_audited_with_the_peer(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    path = tmp_path / "audit.jsonl"
    keys = tmp_path / "keys.jsonl"
    key = add_key(keys, "lis-north")
    trail = AuditTrail(AuditLog(path, fsync=False))
    plane = make_plane(FakeCore(), executor, trail, ApiKeyStore.from_file(keys))
    caller = plane.admit("/x.Service/ModelInfer", [("x-api-key", key)], PEER, {})
    assert caller == Caller("lis-north", PEER, "api-key")
    images = [ImageInput(b"img-%d" % i) for i in range(3)]
    plane.analyze_batch(caller, "ModelInfer", images, AnalyzeOptions(), None, {"models": ["svm"]})
    with pytest.raises(Unauthenticated):
        plane.admit("/x.Service/ModelInfer", [("x-api-key", "hsk_wrong")], PEER, {})
    lines = records(path)
    assert [r["rpc"] for r in lines] == ["ModelInfer"] * 4
    assert sorted(str(r["content_hash"]) for r in lines[:3]) == sorted(
        hashlib.sha256(i.data).hexdigest() for i in images
    )
    assert {r["caller_id"] for r in lines[:3]} == {"lis-north"}
    refused = lines[3]
    assert (refused["outcome"], refused["peer"], refused["caller_id"]) == ("UNAUTHENTICATED", PEER, "")
    assert verify(path).ok


def test_refusals_are_logged_with_the_peer(
    executor: ThreadPoolExecutor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys.jsonl"
    add_key(keys, "lab")
    plane = make_plane(FakeCore(), executor, store=ApiKeyStore.from_file(keys))
    with captured_events(caplog) as logs, pytest.raises(Unauthenticated):
        plane.admit("/x.Service/Analyze", [], PEER, {})
    refusal = next(entry for entry in logs if entry["event"] == "auth_rejected")
    assert refusal["peer"] == PEER


def test_the_trail_fails_closed_logs_an_error_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    writer, clock, changes = FlakyWriter(), Clock(), []
    trail = AuditTrail(AuditLog(path, fsync=False, write=writer), retry_s=5.0, clock=clock)
    trail.set_on_change(changes.append)
    record = AuditRecord("lab", "", {}, {}, "OK", {}, 1.0, "Analyze", PEER)
    trail.write(record)
    writer.full = True
    with captured_events(caplog) as logs, pytest.raises(Unavailable) as info:
        trail.write(record)
    assert info.value.reason == "AUDIT_UNAVAILABLE"
    assert not trail.up and changes == [False]
    assert [e["log_level"] for e in logs if e["event"] == "audit_write_failed"] == ["error"]
    # While down, calls are refused without touching the disk until a retry is due.
    calls = writer.calls
    for _ in range(3):
        with pytest.raises(Unavailable):
            trail.ensure_writable()
    assert writer.calls == calls
    clock.now = 5.0
    with pytest.raises(Unavailable):
        trail.ensure_writable()  # the retry is made, and fails: still down
    assert writer.calls == calls + 1 and not trail.up
    writer.full = False
    trail.tick()  # not yet due
    assert not trail.up
    clock.now = 10.0
    trail.tick()  # the background retry writes the resumption record
    assert trail.up and changes == [False, True]
    trail.write(record)
    lines = records(path)
    assert [r["rpc"] for r in lines] == ["Analyze", RESUMED_RPC, "Analyze"]
    assert lines[1]["parts"] == {"refused_calls": "4"}
    assert verify(path).ok  # the failed writes left no trace in the chain


def test_a_partial_write_is_cut_back_so_the_chain_stays_intact(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    def half(fd: int, data: bytes) -> int:
        return os.write(fd, data[: len(data) // 2])

    log = AuditLog(path, fsync=False, write=half)
    with pytest.raises(Unavailable):
        log.append(AuditRecord("lab", "", {}, {}, "OK", {}, 1.0, "Analyze"))
    log.close()
    assert path.read_bytes() == b""
    with AuditLog(path, fsync=False) as again:  # resumes: the tail is not damaged
        again.append(AuditRecord("lab", "", {}, {}, "OK", {}, 1.0, "Analyze"))
    assert verify(path).ok


def test_an_analysis_whose_record_cannot_be_written_is_not_returned(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    writer = FlakyWriter()
    trail = AuditTrail(AuditLog(tmp_path / "audit.jsonl", fsync=False, write=writer))
    plane = make_plane(FakeCore(), executor, trail)
    writer.full = True
    with pytest.raises(Unavailable):
        plane.analyze(Caller("lab"), "Analyze", lambda: (ImageInput(b"img"), AnalyzeOptions()), None, {})
    with pytest.raises(Unavailable):  # and the next call is refused at the door
        plane.admit("/x.Service/Analyze", [], PEER, {})


def test_anonymous_callers_are_limited_per_connection(executor: ThreadPoolExecutor) -> None:
    plane = make_plane(FakeCore(), executor)
    first = plane.admit("/x/AnalyzeStream", [], "ipv4:127.0.0.1:50001", {})
    second = plane.admit("/x/AnalyzeStream", [], "ipv4:127.0.0.1:50002", {})
    with (
        plane.stream(first, "AnalyzeStream"),
        plane.stream(second, "AnalyzeStream"),
        pytest.raises(ResourceExhausted),
        plane.stream(first, "AnalyzeStream"),
    ):
        pass


def test_a_verified_client_certificate_names_the_caller(executor: ThreadPoolExecutor) -> None:
    plane = make_plane(FakeCore(), executor)
    caller = plane.admit("/x/Analyze", [], PEER, {"x509_common_name": [b"lis north/1"]})
    assert caller == Caller("cert.lis_north_1", PEER, "certificate")
    assert caller.limit_key == "cert.lis_north_1"


def test_batch_images_are_audited_with_the_calls_trace_id(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(AuditLog(path, fsync=False))
    plane = make_plane(FakeCore(), executor, trail)
    caller = plane.admit("/x.Service/ModelInfer", [], PEER, {})
    tracing = setup_tracing(TracingConfig(None, "gateway"), exporter=InMemorySpanExporter())
    images = [ImageInput(b"img-%d" % i) for i in range(3)]
    with tracing.tracer.start_as_current_span("/inference.GRPCInferenceService/ModelInfer"):
        trace_id = current_trace_id()
        plane.analyze_batch(caller, "ModelInfer", images, AnalyzeOptions(), None, {})
    plane.analyze(caller, "Analyze", lambda: (images[0], AnalyzeOptions()), None, {})  # untraced
    tracing.shutdown()
    assert [(r["rpc"], r["trace_id"]) for r in records(path)] == [("ModelInfer", trace_id)] * 3 + [
        ("Analyze", "")
    ]
    assert verify(path).ok
