"""The gateway's data plane: every policy applied once, around the core, for every protocol.

AnalysisService (:mod:`gateway.servicer`) and the Open Inference Protocol (:mod:`gateway.kserve`) are thin
adapters: they translate protobuf and call this class; :mod:`gateway.interceptor` admits each call through
:meth:`DataPlane.admit`. No protocol can bypass a policy:

* **identity**: an API key's caller, a verified client certificate's subject, or anonymous
  (:mod:`gateway.identity`); a refused call is logged with its peer address and audited;
* **fail closed**: while the audit trail cannot be written, every call is refused with UNAVAILABLE
  (:class:`~gateway.audit_trail.AuditTrail`);
* **limits**: open streams per caller, or per connection for anonymous callers; images per batch and
  batches run with bounded parallelism, stopped at the first failure (:meth:`DataPlane.analyze_batch`);
* **audit**: one record per analysed image (Analyze, each AnalyzeStream request, each KServe batch
  element), one per other call (written by the interceptor), one per refused call;
* **deadlines**: the caller's deadline is passed to the core, which bounds every downstream call;
* **tracing**: an audit record names the call's trace (``trace_id``; empty when tracing is off), and a
  batch's images run in the call's trace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol

import grpc

from gateway.audit import AuditRecord
from gateway.audit_trail import AuditTrail
from gateway.domain import AnalysisReport, AnalyzeOptions, Capabilities, SiteReport
from gateway.identity import Caller, Identifier
from gateway.limits import StreamLimiter
from gateway.site_monitor import SiteMonitor
from hemascope.errors import HemascopeError, ResourceExhausted, Unauthenticated
from hemascope.imaging.inputs import ImageInput
from hemascope.logs import get_logger
from hemascope.site.drift import DriftRule
from hemascope.tracing import current_trace_id, in_context

log = get_logger(__name__)

REASON_GATEWAY_BUSY = "GATEWAY_BUSY"


class AnalysisCore(Protocol):
    """What the data plane needs of :class:`gateway.core.GatewayCore`."""

    def capabilities(self) -> Capabilities: ...

    def analyze(
        self, image: ImageInput, options: AnalyzeOptions, deadline_s: float | None
    ) -> AnalysisReport: ...


def short_rpc(method: str) -> str:
    """``/package.Service/Method`` -> ``Method`` (the audit trail's ``rpc``)."""
    return method.rsplit("/", 1)[-1]


class BoundedRunner:
    """An executor with a bounded number of queued-or-running tasks; beyond it ResourceExhausted."""

    def __init__(self, executor: Executor, capacity: int) -> None:
        self._executor = executor
        self._slots = threading.BoundedSemaphore(capacity)
        self.capacity = capacity

    def submit(self, fn: Callable[[], AnalysisReport]) -> Future[AnalysisReport]:
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(
                f"the gateway is running {self.capacity} batch images already; retry with backoff",
                reason=REASON_GATEWAY_BUSY,
            )
        try:
            future = self._executor.submit(fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future


class DataPlane:
    """Identity, fail-closed audit, limits and batches around one :class:`AnalysisCore`."""

    def __init__(
        self,
        core: AnalysisCore,
        identifier: Identifier,
        limiter: StreamLimiter,
        batch_runner: BoundedRunner,
        batch_parallel: int,
        audit: AuditTrail | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sites: SiteMonitor | None = None,
        site_profiles: Mapping[str, str] | None = None,
    ) -> None:
        self.core = core
        self.identifier = identifier
        self.limiter = limiter
        self._runner = batch_runner
        self._parallel = max(1, batch_parallel)
        self.audit = audit
        self._clock = clock
        self.sites = sites if sites is not None else SiteMonitor(DriftRule())
        self.site_profiles = dict(site_profiles or {})

    # ---------------------------------------------------------------- admission

    def admit(self, method: str, metadata: Any, peer: str, auth_context: Mapping[str, Any]) -> Caller:
        """The caller of a new call, when it may proceed; Unauthenticated (audited, logged with the peer)
        or Unavailable (the audit trail is down)."""
        started = self._clock()
        try:
            caller = self.identifier.identify(metadata, peer, auth_context)
        except Unauthenticated as exc:
            log.warning("auth_rejected", method=method, peer=peer, reason=exc.message)
            self._record_refusal(Caller("", peer), short_rpc(method), exc, started)
            raise
        if self.audit is not None:
            self.audit.ensure_writable()
        return caller

    def _record_refusal(self, caller: Caller, rpc: str, error: HemascopeError, started: float) -> None:
        """Audits a refused call; a trail that is down is logged, not raised (the call is refused anyway)."""
        try:
            self.record(caller, rpc, error.code.name, started=started)
        except HemascopeError as exc:
            log.error("audit_refusal_not_recorded", rpc=rpc, peer=caller.peer, error=exc.message)

    # ---------------------------------------------------------------- audit

    def record(
        self,
        caller: Caller,
        rpc: str,
        outcome: str,
        *,
        started: float,
        content_hash: str = "",
        options: Mapping[str, Any] | None = None,
        model_versions: Mapping[str, str] | None = None,
        parts: Mapping[str, str] | None = None,
    ) -> None:
        """Writes one audit record (nothing without an audit trail); Unavailable when it cannot."""
        if self.audit is None:
            return
        record = AuditRecord(
            caller_id=caller.id,
            content_hash=content_hash,
            options=dict(options or {}),
            model_versions=dict(model_versions or {}),
            outcome=outcome,
            parts=dict(parts or {}),
            latency_ms=(self._clock() - started) * 1000,
            rpc=rpc,
            peer=caller.peer,
            trace_id=current_trace_id(),
        )
        self.audit.write(record)

    def record_quietly(
        self,
        caller: Caller,
        rpc: str,
        outcome: str,
        started: float,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Audits a failed call; when even that cannot be written it is logged (the caller sees the
        original failure)."""
        try:
            self.record(caller, rpc, outcome, started=started, options=options)
        except HemascopeError as exc:
            log.error("audit_failure_not_recorded", rpc=rpc, outcome=outcome, error=exc.message)

    def now(self) -> float:
        return self._clock()

    # ---------------------------------------------------------------- analysis

    def analyze(
        self,
        caller: Caller,
        rpc: str,
        read: Callable[[], tuple[ImageInput, AnalyzeOptions]],
        deadline_s: float | None,
        options_view: Mapping[str, Any],
    ) -> AnalysisReport:
        """One image through the core, audited; ``read`` converts the request (its errors are audited
        too). A report whose audit record cannot be written is not returned (Unavailable)."""
        started = self._clock()
        try:
            image, options = read()
            profile = self.site_profiles.get(caller.id, "")
            if profile:
                options = replace(options, site_profile=profile)
            report = self.core.analyze(image, options, deadline_s)
            self.sites.observe(caller.id, report)
        except HemascopeError as exc:
            self.record(caller, rpc, exc.code.name, started=started, options=options_view)
            raise
        except Exception:
            self.record(caller, rpc, grpc.StatusCode.INTERNAL.name, started=started, options=options_view)
            raise
        self.record(
            caller,
            rpc,
            "OK",
            started=started,
            content_hash=report.content_hash,
            options=options_view,
            model_versions=report.model_versions,
            parts={part.part: part.code.name for part in report.parts},
        )
        return report

    def analyze_batch(
        self,
        caller: Caller,
        rpc: str,
        images: Sequence[ImageInput],
        options: AnalyzeOptions,
        deadline_s: float | None,
        options_view: Mapping[str, Any],
        check: Callable[[int, AnalysisReport], None] = lambda _i, _r: None,
        field: str = "images",
    ) -> list[AnalysisReport]:
        """Every image of a batch, at most ``batch_parallel`` at once; the first failure (an error, or
        ``check`` refusing a report) stops the batch: nothing more is started, what has not started is
        cancelled, and the error is raised with its element's index in the message."""
        reports: list[AnalysisReport | None] = [None] * len(images)
        pending: dict[Future[AnalysisReport], int] = {}
        upcoming = iter(range(len(images)))

        def start_next() -> None:
            index = next(upcoming, None)
            if index is not None:
                image = images[index]
                pending[
                    self._runner.submit(  # in the call's trace: each image's spans and audit record
                        in_context(
                            lambda: self.analyze(
                                caller, rpc, lambda: (image, options), deadline_s, options_view
                            )
                        )
                    )
                ] = index

        try:
            for _ in range(self._parallel):
                start_next()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: pending[f]):
                    index = pending.pop(future)
                    try:
                        report = future.result()
                    except HemascopeError as exc:
                        exc.message = f"image {index}: {exc.message}"
                        exc.field = exc.field or f"{field}[{index}]"
                        raise
                    check(index, report)
                    reports[index] = report
                    start_next()
        finally:
            for future in pending:
                future.cancel()
        return [report for report in reports if report is not None]

    def capabilities(self) -> Capabilities:
        return self.core.capabilities()

    def site_status(self, caller: Caller) -> SiteReport:
        """The caller's site status (drift monitor), as its next answer would report it."""
        return self.sites.status(caller.id)

    @contextmanager
    def stream(self, caller: Caller, rpc: str) -> Iterator[None]:
        """Holds one of the caller's stream slots (per connection when anonymous) for the block; a stream
        refused by the limit, or ended by an error, is audited as one call."""
        started = self._clock()
        try:
            with self.limiter.acquire(caller.limit_key):
                yield
        except HemascopeError as exc:
            self.record_quietly(caller, rpc, exc.code.name, started)
            raise
