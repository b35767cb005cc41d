"""GetCapabilities: what the downstream services describe, with their health, cached briefly.

The four describe calls and health checks run concurrently with a short timeout. The answer is cached for
``capabilities_ttl_s`` and refreshed sooner when a service starts or stops answering calls (each
Downstream's ``generation``); circuit-breaker states are always read live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.domain import Capabilities, EmbeddingInfo, ModelCapability, ServiceState
from gateway.downstream import Deadline, Downstreams
from gateway.settings import GatewaySettings
from hemascope.errors import HemascopeError
from hemascope.logs import get_logger
from hemascope.v1 import classifier_pb2, detector_pb2, explain_pb2, feature_pb2

log = get_logger(__name__)
T = TypeVar("T")
_MIN_FORCED_REFRESH_S = (
    1.0  # a forced refresh (e.g. an unknown model name) asks the services at most this often
)


@dataclass(frozen=True)
class ClassifierFacts:
    """What the gateway validates options against: the last bundle the classifier/explain described."""

    classes: tuple[str, ...]
    models: tuple[str, ...]
    explain_methods: tuple[str, ...]


class CapabilitiesCache:
    def __init__(
        self,
        downstreams: Downstreams,
        settings: GatewaySettings,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._downstreams = downstreams
        self._settings = settings
        self._executor = executor
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Capabilities, float, tuple[int, ...]] | None = None
        self.facts: ClassifierFacts | None = None
        """The classes, models and methods last described; None until the classifier has answered."""

    def invalidate(self) -> None:
        """Forgets the cached answer (e.g. after a bundle promotion): the next ``get`` asks the services."""
        with self._lock:
            self._cached = None

    def get(self, *, force: bool = False) -> Capabilities:
        """The capabilities, from the cache while fresh; ``force`` re-asks the services (at most once a
        second, so a stream of bad requests cannot turn into a stream of describe calls)."""
        generations = tuple(service.generation for service in self._downstreams.all())
        with self._lock:
            cached = self._cached
        fresh = (
            cached is not None
            and cached[2] == generations
            and self._clock() - cached[1] < self._settings.capabilities_ttl_s
        )
        forced = force and (cached is None or self._clock() - cached[1] >= _MIN_FORCED_REFRESH_S)
        if cached is None or forced or not fresh:
            caps = self._fetch()
            with self._lock:
                self._cached = (caps, self._clock(), generations)
        else:
            caps = cached[0]
        live = tuple(
            replace(state, circuit_open=service.breaker.is_open)
            for state, service in zip(caps.services, self._downstreams.all(), strict=True)
        )
        return replace(caps, services=live)

    def _fetch(self) -> Capabilities:
        d, timeout = self._downstreams, self._settings.health_timeout_s

        def describe(call: Callable[[], T]) -> Future[T | None]:
            return self._executor.submit(_quietly, call)

        models = describe(
            lambda: d.classifier.call(
                d.classifier.stub.ListModels, classifier_pb2.ListModelsRequest(), Deadline.after(timeout)
            )
        )
        explain = describe(
            lambda: d.explain.call(
                d.explain.stub.Describe, explain_pb2.DescribeRequest(), Deadline.after(timeout)
            )
        )
        detector = describe(
            lambda: d.detector.call(
                d.detector.stub.GetModelInfo, detector_pb2.GetModelInfoRequest(), Deadline.after(timeout)
            )
        )
        backbone = describe(
            lambda: d.feature.call(
                d.feature.stub.GetBackboneInfo, feature_pb2.GetBackboneInfoRequest(), Deadline.after(timeout)
            )
        )
        health = [self._executor.submit(service.check_health, timeout) for service in d.all()]
        return self._assemble(
            models.result(),
            explain.result(),
            detector.result(),
            backbone.result(),
            [h.result() for h in health],
        )

    def _assemble(
        self,
        models: classifier_pb2.ListModelsResponse | None,
        explain: explain_pb2.DescribeResponse | None,
        detector: detector_pb2.GetModelInfoResponse | None,
        backbone: feature_pb2.GetBackboneInfoResponse | None,
        serving: list[bool],
    ) -> Capabilities:
        methods: dict[str, tuple[str, ...]] = {}
        if explain is not None:
            for model in explain.models:
                rest = [m for m in model.methods if m != model.default_method]
                methods[model.name] = (model.default_method, *rest) if model.default_method else tuple(rest)
        caps = Capabilities(
            max_image_bytes=self._settings.max_image_bytes,
            max_image_pixels=self._settings.max_image_pixels,
            max_stream_in_flight=self._settings.max_stream_in_flight,
            max_streams_per_caller=self._settings.max_streams_per_caller,
            services=tuple(
                ServiceState(service.name, ok, service.breaker.is_open, service.absent)
                for service, ok in zip(self._downstreams.all(), serving, strict=True)
            ),
            explain_methods=tuple(sorted({m for ms in methods.values() for m in ms})),
        )
        if models is not None:
            caps = replace(
                caps,
                classes=tuple(models.classes),
                malignant_classes=tuple(models.malignant_classes),
                models=tuple(
                    ModelCapability(m.name, m.version, methods.get(m.name, ())) for m in models.models
                ),
                bundle_version=models.bundle_version,
                expected_atypical_rate=models.expected_atypical_rate,
            )
            self.facts = ClassifierFacts(
                caps.classes, tuple(m.name for m in models.models), caps.explain_methods or self._methods()
            )
        if backbone is not None:
            info = EmbeddingInfo(backbone.backbone, backbone.weights_hash, backbone.preprocessing)
            caps = replace(caps, embedding=info)
        elif models is not None:
            caps = replace(
                caps, embedding=EmbeddingInfo(models.backbone, models.weights_hash, models.preprocessing)
            )
        if detector is not None:
            caps = replace(
                caps, detector_version=detector.model_version, detector_classes=tuple(detector.classes)
            )
        return caps

    def _methods(self) -> tuple[str, ...]:
        return self.facts.explain_methods if self.facts is not None else ()


def _quietly(call: Callable[[], T]) -> T | None:
    """The call's result, or None (logged) when the service cannot answer."""
    try:
        return call()
    except HemascopeError as exc:
        log.info("capabilities_part_unavailable", code=exc.code.name, reason=exc.reason)
        return None
