"""The gateway's core: one image -> one report, fanned out to the downstream services. No gRPC servicer here.

Order of work for one Analyze: validate the options and check the image here (bad options, and an image
that is too large, of another format than declared, unsupported or with an unreadable header, are refused
with INVALID_ARGUMENT before any downstream call); start detection at once (when asked, on the part pool);
embed the image; then classify (on the calling thread) and explain (on the pool) concurrently, both with
that embedding (so the explanation's probabilities are the classifier's). Each part gets a status; a part
that needs a failed part is FAILED_PRECONDITION naming it. Every downstream call is bounded by the caller's
deadline (see gateway.downstream).

The report names the image by its pixels' content hash and size. When the image is classified, the feature
service decodes it anyway and its answer carries both, so the gateway reads only the header and does not
decode the pixels a second time on the request's path (about 1 ms of a cold call); when the embedding
fails, or nothing is classified, the gateway decodes the image itself, so a body that is corrupt past its
header is still refused as INVALID_ARGUMENT by the gateway, and the report still names the image. Bytes
seen before are recalled from a memo of their content hash and size (hemascope.imaging.memo).

The rule for failures: Analyze returns a report whenever a part could be attempted, whatever failed
(statuses in ``parts``); it raises only when the request itself is wrong (INVALID_ARGUMENT), or when every
part failed and one failed because of the request (the services' INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import TypeVar

import grpc

from gateway import metrics
from gateway.capabilities import CapabilitiesCache, ClassifierFacts
from gateway.domain import (
    PARTS,
    AnalysisReport,
    AnalyzeOptions,
    Capabilities,
    Classification,
    Detection,
    EmbeddingInfo,
    PartStatus,
)
from gateway.downstream import Deadline, Downstreams, open_downstreams
from gateway.settings import GatewaySettings
from hemascope.consensus import ModelVote, consensus, input_reason
from hemascope.enums import enum_name
from hemascope.errors import DeadlineExceeded, HemascopeError, InvalidArgument, Unavailable, echo
from hemascope.imaging import ImageLimits, content_hash, decode_image, probe_image
from hemascope.imaging.inputs import ImageInput
from hemascope.imaging.memo import DecodeMemo, SeenImage
from hemascope.logs import get_logger
from hemascope.tracing import OFF, Tracing, in_context, set_attributes, step
from hemascope.v1 import classifier_pb2, common_pb2, detector_pb2, explain_pb2, feature_pb2

log = get_logger(__name__)
T = TypeVar("T")
_REFER_PREFIX = "REFER_REASON_"
_HEX64 = re.compile(r"[0-9a-f]{64}")  # a content hash as the feature service sends it (else: decode here)
_RESULT_SLACK_S = 1.0  # beyond the deadline, how long to wait for a part's thread before giving up on it


class GatewayCore:
    """Orchestrates the downstream services; thread-safe; one per gateway process."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing = OFF,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._tracing = tracing
        self._executor = ThreadPoolExecutor(settings.part_workers, thread_name_prefix="gateway-part")
        self._downstreams: Downstreams | None = None
        self._caps: CapabilitiesCache | None = None
        self._limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.decodes = DecodeMemo(settings.decode_memo_entries)

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> None:
        """Opens the channels and asks every service what it serves. A service that is down is logged,
        not fatal: the gateway serves partial results. Bad TLS files raise ConfigurationError."""
        self._downstreams = open_downstreams(self.settings, self._clock, self._tracing)
        self._caps = CapabilitiesCache(self._downstreams, self.settings, self._executor, self._clock)
        caps = self._caps.get(force=True)
        for state in caps.services:
            (log.info if state.serving else log.warning)(
                "downstream", service=state.name, serving=state.serving
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._downstreams is not None:
            self._downstreams.close()

    @property
    def downstreams(self) -> Downstreams:
        if self._downstreams is None:
            raise Unavailable("the gateway is still starting", reason="NOT_READY")
        return self._downstreams

    def forget_capabilities(self) -> None:
        """Drops the cached capabilities, so the next GetCapabilities describes the services afresh."""
        if self._caps is not None:
            self._caps.invalidate()

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            raise Unavailable("the gateway is still starting", reason="NOT_READY")
        return self._caps.get()

    # ---------------------------------------------------------------- analysis

    def analyze(self, image: ImageInput, options: AnalyzeOptions, deadline_s: float | None) -> AnalysisReport:
        """Analyses one image within ``deadline_s`` seconds (None: downstream_timeout_s per call)."""
        with step(self._tracing.tracer, "gateway.analyze") as span:
            report = self._analyze(image, options, deadline_s)
            set_attributes(span, {"parts": [f"{p.part}:{p.code.name}" for p in report.parts]})
            return report

    def _analyze(
        self, image: ImageInput, options: AnalyzeOptions, deadline_s: float | None
    ) -> AnalysisReport:
        started = time.perf_counter()
        deadline = Deadline.after(self._budget(deadline_s), self._clock)
        downstreams = self.downstreams
        self._validate(options)
        key = DecodeMemo.key(image.data, image.media_type) if self.decodes.entries else b""
        seen = self.decodes.get(key)
        if seen is None and (
            options.skip_classification or probe_image(image.data, self._limits, image.media_type) is None
        ):
            seen = self._decoded(image, key)
        decode_ms = (time.perf_counter() - started) * 1000
        proto_image = common_pb2.Image(data=image.data, media_type=image.media_type)
        pending: dict[str, Future[tuple[PartStatus, object, HemascopeError | None]]] = {}
        if options.detect:
            pending["detection"] = self._submit(
                "detection", lambda: self._detect(downstreams, proto_image, options, deadline)
            )
        outcomes: dict[str, tuple[PartStatus, object, HemascopeError | None]] = {}
        if not options.skip_classification:
            embed = self._part("embedding", lambda: self._embed(downstreams, proto_image, deadline))
            outcomes["embedding"] = embed
            embedded = embed[1]
            dependants = ["classification", *(["explanation"] if options.explain else [])]
            if isinstance(embedded, feature_pb2.EmbedResponse):
                vector = embedded.embedding
                if options.explain:
                    pending["explanation"] = self._submit(
                        "explanation",
                        lambda: self._explain(downstreams, proto_image, vector, options, deadline),
                    )
                # On this thread while the explanation runs on the pool: no hand-off for the common part.
                outcomes["classification"] = self._part(
                    "classification", lambda: self._classify(downstreams, vector, options, deadline)
                )
            else:
                for part in dependants:
                    outcomes[part] = _blocked(part, "embedding")
        if seen is None:
            embedded_image = outcomes["embedding"][1]
            named = time.perf_counter()
            seen = (
                self._named_by(embedded_image, key)
                if isinstance(embedded_image, feature_pb2.EmbedResponse)
                and _HEX64.fullmatch(embedded_image.content_hash)
                else self._decoded(image, key)
            )
            decode_ms += (time.perf_counter() - named) * 1000
        report = AnalysisReport(image.image_id, seen.content_hash, seen.width, seen.height)
        report.timings["decode"] = decode_ms
        for part, future in pending.items():
            outcomes[part] = self._result(part, future, deadline)
        self._fill(report, outcomes)
        report.timings["total"] = (time.perf_counter() - started) * 1000
        return report

    def _decoded(self, image: ImageInput, key: bytes) -> SeenImage:
        """Decodes ``image`` (InvalidImage when it is not a valid image within the limits) and remembers
        what that gave under ``key`` (hemascope.imaging.memo)."""
        decoded = decode_image(image.data, self._limits, image.media_type)
        seen = SeenImage(content_hash(decoded.pixels), decoded.width, decoded.height)
        self.decodes.put(key, seen)
        return seen

    def _named_by(self, embedded: feature_pb2.EmbedResponse, key: bytes) -> SeenImage:
        """The content hash and size the feature service decoded the image to (the same decoder and
        hash), remembered under ``key``."""
        seen = SeenImage(embedded.content_hash, embedded.width, embedded.height)
        self.decodes.put(key, seen)
        return seen

    def _budget(self, deadline_s: float | None) -> float | None:
        """The time the downstream calls get: the caller's deadline less a reserve for answering."""
        if deadline_s is None:
            return None
        return deadline_s - min(self.settings.deadline_reserve_ms / 1000, 0.2 * deadline_s)

    def _validate(self, options: AnalyzeOptions) -> None:
        if options.skip_classification and not options.detect:
            raise InvalidArgument(
                "nothing to analyse: classification is skipped and detection is not asked for",
                reason="NOTHING_TO_DO",
                field="options",
            )
        if options.skip_classification and options.explain:
            raise InvalidArgument(
                "explanation needs classification: do not set skip_classification with explain",
                reason="CONFLICTING_OPTIONS",
                field="options.explain",
            )
        for name, value in (
            ("detect_confidence", options.detect_confidence),
            ("detect_iou", options.detect_iou),
        ):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise InvalidArgument(
                    f"{name} must be in (0, 1] (0: default)", reason="BAD_OPTION", field=f"options.{name}"
                )
        if not (math.isfinite(options.malignant_threshold) and 0 < options.malignant_threshold <= 1):
            raise InvalidArgument(
                "malignant_threshold must be in (0, 1] (0: 0.5)",
                reason="BAD_OPTION",
                field="options.malignant_threshold",
            )
        self._check_names(options)

    def _check_names(self, options: AnalyzeOptions) -> None:
        """Unknown models, classes or methods -> INVALID_ARGUMENT, when the services have described them
        (re-asked once before refusing, in case a bundle reload added a name)."""
        caps = self._caps
        if caps is None or caps.facts is None or options.skip_classification:
            return
        problem = _unknown_name(options, caps.facts)
        if problem is not None:
            caps.get(force=True)
            problem = _unknown_name(options, caps.facts) if caps.facts is not None else None
        if problem is None:
            return
        field, value, known = problem
        raise InvalidArgument(
            f"unknown {field.split('.')[-1].replace('_', ' ')} {echo(value)}; known: {', '.join(known)}",
            reason="UNKNOWN_OPTION",
            field=field,
        )

    # ---------------------------------------------------------------- parts

    def _submit(
        self, part: str, run: Callable[[], T]
    ) -> Future[tuple[PartStatus, T | None, HemascopeError | None]]:
        """Runs the part on the executor, in this thread's trace (its span is the part span's parent)."""
        return self._executor.submit(in_context(partial(self._part, part, run)))

    def _part(self, part: str, run: Callable[[], T]) -> tuple[PartStatus, T | None, HemascopeError | None]:
        """Runs one part in its own span (``hemascope.status_code`` its outcome); never raises."""
        started = time.perf_counter()
        result: T | None = None
        error: HemascopeError | None = None
        try:
            with step(self._tracing.tracer, part, part=part):
                result = run()
        except HemascopeError as exc:
            error = exc
        except Exception:
            log.exception("part_failed", part=part)
            error = HemascopeError("internal error in the gateway; it has been logged")
        elapsed = (time.perf_counter() - started) * 1000
        metrics.PART_LATENCY.labels(part).observe(elapsed / 1000)
        if error is None:
            return PartStatus(part, grpc.StatusCode.OK, "", "", elapsed), result, None
        metrics.PART_FAILURES.labels(part, error.code.name).inc()
        return PartStatus(part, error.code, error.reason, error.message, elapsed), None, error

    def _result(
        self, part: str, future: Future[tuple[PartStatus, object, HemascopeError | None]], deadline: Deadline
    ) -> tuple[PartStatus, object, HemascopeError | None]:
        remaining = deadline.remaining()
        wait = (
            remaining if remaining is not None else self.settings.downstream_timeout_s * 4
        ) + _RESULT_SLACK_S
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            error = DeadlineExceeded(f"the {part} part did not finish within the deadline")
            return PartStatus(part, error.code, error.reason, error.message, wait * 1000), None, error

    @staticmethod
    def _embed(d: Downstreams, image: common_pb2.Image, deadline: Deadline) -> feature_pb2.EmbedResponse:
        return d.feature.call(d.feature.stub.Embed, feature_pb2.EmbedRequest(image=image), deadline)

    @staticmethod
    def _detect(
        d: Downstreams, image: common_pb2.Image, options: AnalyzeOptions, deadline: Deadline
    ) -> detector_pb2.DetectResponse:
        detect_options = detector_pb2.DetectOptions(
            confidence=options.detect_confidence, iou=options.detect_iou
        )
        request = detector_pb2.DetectRequest(image=image, options=detect_options)
        return d.detector.call(d.detector.stub.Detect, request, deadline)

    @staticmethod
    def _classify(
        d: Downstreams, embedding: common_pb2.Embedding, options: AnalyzeOptions, deadline: Deadline
    ) -> Classification:
        request = classifier_pb2.ClassifyRequest(
            embeddings=[embedding], models=list(options.models), site_profile=options.site_profile
        )
        response: classifier_pb2.ClassifyResponse = d.classifier.call(
            d.classifier.stub.Classify, request, deadline
        )
        predictions = list(response.results[0].predictions)
        classes = [p.class_name for p in predictions[0].probabilities]
        votes = [
            ModelVote(
                model=p.model,
                label=p.label,
                probabilities={c.class_name: c.probability for c in p.probabilities},
                malignant_probability=p.malignant_probability,
                abstain=p.abstain,
                refer_reason=_refer_reason(p.refer_reason),
                atypical_acquisition=p.atypical_acquisition,
            )
            for p in predictions
        ]
        verdict = consensus(votes, classes, options.malignant_threshold, _input_reason(embedding))
        return Classification(predictions, response.bundle_version, verdict, response.site_profile)

    def _explain(
        self,
        d: Downstreams,
        image: common_pb2.Image,
        embedding: common_pb2.Embedding,
        options: AnalyzeOptions,
        deadline: Deadline,
    ) -> explain_pb2.ExplainResponse:
        request = explain_pb2.ExplainRequest(
            image=image,
            embedding=embedding,
            model=options.explain_model or self.settings.explain_default_model,
            target_class=options.explain_class,
            method=options.explain_method,
            overlay=options.explain_overlay,
        )
        return d.explain.call(d.explain.stub.Explain, request, deadline)

    # ---------------------------------------------------------------- assembly

    @staticmethod
    def _fill(
        report: AnalysisReport, outcomes: dict[str, tuple[PartStatus, object, HemascopeError | None]]
    ) -> None:
        for part in PARTS:
            if part not in outcomes:
                continue
            status, result, _ = outcomes[part]
            report.parts.append(status)
            report.timings[part] = status.elapsed_ms
            if isinstance(result, feature_pb2.EmbedResponse):
                e = result.embedding
                report.embedding = EmbeddingInfo(
                    e.backbone, e.weights_hash, e.preprocessing, result.cache_hit
                )
                report.model_versions["feature"] = f"{e.backbone}:{e.weights_hash[:12]}:{e.preprocessing}"
                if e.HasField("input_check"):
                    report.input_check = e.input_check
            elif isinstance(result, Classification):
                report.classification = result
                report.model_versions["classifier"] = result.bundle_version
                for p in result.predictions:
                    report.model_versions[f"classifier/{p.model}"] = p.model_version
                if result.site_profile:
                    report.model_versions["classifier/site_profile"] = result.site_profile
            elif isinstance(result, detector_pb2.DetectResponse):
                report.detection = Detection(list(result.boxes), result.model_version)
                report.model_versions["detector"] = result.model_version
            elif isinstance(result, explain_pb2.ExplainResponse):
                report.explanation = result
                report.model_versions["explain"] = result.bundle_version
                report.model_versions[f"explain/{result.model}"] = result.model_version
        if report.parts and not any(status.ok for status in report.parts):
            for status, _, error in outcomes.values():
                if error is not None and status.code is grpc.StatusCode.INVALID_ARGUMENT:
                    raise error  # every part failed, and because of the request: the caller's fault


def _refer_reason(code: int) -> str:
    """The classifier's refer reason as named in a ModelVote ("LOW_CONFIDENCE", ...)."""
    return enum_name(classifier_pb2.ReferReason, code).removeprefix(_REFER_PREFIX)


def _input_reason(embedding: common_pb2.Embedding) -> str:
    """The input check's reason when it found no single centred white cell; empty otherwise or unchecked."""
    check = embedding.input_check
    if not embedding.HasField("input_check") or not check.kind:
        return ""
    kind = enum_name(common_pb2.InputKind, check.kind).removeprefix("INPUT_KIND_").lower()
    return input_reason(kind, check.reason)


def _blocked(part: str, needs: str) -> tuple[PartStatus, object, HemascopeError | None]:
    message = f"not attempted: the {needs} part it needs failed"
    return (
        PartStatus(part, grpc.StatusCode.FAILED_PRECONDITION, f"{needs.upper()}_FAILED", message, 0.0),
        None,
        None,
    )


def _unknown_name(options: AnalyzeOptions, facts: ClassifierFacts) -> tuple[str, str, tuple[str, ...]] | None:
    """(field, value, known values) of the first unknown name in ``options``, or None."""
    models, classes, methods = facts.models, facts.classes, facts.explain_methods
    for model in options.models:
        if model not in models:
            return "options.models", model, models
    if options.explain:
        if options.explain_model and options.explain_model not in models:
            return "options.explain_model", options.explain_model, models
        if options.explain_class and options.explain_class not in classes:
            return "options.explain_class", options.explain_class, classes
        if options.explain_method and methods and options.explain_method not in methods:
            return "options.explain_method", options.explain_method, methods
    return None
