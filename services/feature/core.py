"""The feature service's core: image bytes -> embedding, with caching and micro-batching. No gRPC here."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial

import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace

from hemascope.batching import MicroBatcher
from hemascope.cache import CacheKey, EmbeddingCache, build_cache
from hemascope.cache.seal import Sealer
from hemascope.errors import (
    ConfigurationError,
    DeadlineExceeded,
    HemascopeError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from hemascope.files import file_sha256
from hemascope.imaging.cellseg import Working, working_image
from hemascope.imaging.decode import DecodedImage, ImageLimits, decode_image
from hemascope.imaging.fingerprint import fingerprint
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.inputcheck import InputCheck, InputKind, blank_reason, check_input
from hemascope.imaging.inputs import ImageInput, check_batch
from hemascope.imaging.memo import DecodeMemo, SeenImage
from hemascope.imaging.preprocess import Preprocessing, get_preprocessing
from hemascope.logs import get_logger
from hemascope.telemetry import INPUT_CHECKS
from hemascope.tracing import set_attributes, step
from services.feature.backbones import BackboneSpec, check_graph_compatible, get_spec, weights_file
from services.feature.onnx_export import ensure_onnx
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

log = get_logger(__name__)


#: Inspections (input-check verdict and acquisition fingerprint) remembered per feature service (a few
#: hundred bytes each).
VERDICTS_KEPT = 4096


@dataclass(frozen=True)
class Inspection:
    """What the feature service saw of an image besides its embedding; both depend on the pixels only."""

    #: the input check's verdict; None when the check is off
    check: InputCheck | None
    #: the acquisition fingerprint (:mod:`hemascope.imaging.fingerprint`)
    acquisition: NDArray[np.float32]


@dataclass(frozen=True)
class EmbedResult:
    vector: NDArray[np.float32]
    content_hash: str
    cache_hit: bool
    width: int
    height: int
    image_id: str = ""
    #: the input check's verdict; None when the check is off
    input_check: InputCheck | None = None
    #: the acquisition fingerprint; None only for results made without inspecting the image
    acquisition: NDArray[np.float32] | None = None


@dataclass(frozen=True)
class BackboneInfo:
    spec: BackboneSpec
    weights_hash: str
    weights_source: str
    providers: Sequence[str]
    #: The per-image option this service runs; its version is every embedding's provenance.
    preprocessing: Preprocessing


@dataclass
class _Prepared:
    """An image decoded (or known from the decode memo) and looked up in the cache; ``pixels`` set only on
    a miss."""

    image: ImageInput
    width: int
    height: int
    key: CacheKey
    cached: NDArray[np.float32] | None
    inspection: Inspection | None  # None: embedded without inspecting (see FeatureCore.embed_many)
    pixels: NDArray[np.uint8] | None = None
    future: Future[NDArray[np.float32]] | None = field(default=None, repr=False)


class FeatureCore:
    """Loads one backbone's ONNX export and embeds images with it."""

    def __init__(
        self,
        settings: FeatureSettings,
        cache: EmbeddingCache | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings
        self._tracer = tracer or trace.NoOpTracer()
        self.spec = get_spec(settings.backbone)
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self.cache = cache or build_cache(
            settings.redis_url,
            prefix=settings.cache_prefix,
            ttl_s=settings.cache_ttl_s,
            memory_entries=settings.memory_cache_entries,
            redis_timeout_s=settings.redis_timeout_ms / 1000,
            sealer=Sealer.for_settings(settings.cache_key_file) if settings.redis_url else None,
            redis_password=settings.redis_password_value(),
        )
        self._info: BackboneInfo | None = None
        self._embedder: OnnxEmbedder | None = None
        self._batcher: MicroBatcher[NDArray[np.uint8], NDArray[np.float32]] | None = None
        self._prep_pool: ThreadPoolExecutor | None = None
        # Inspections by pixel hash: a repeated image (an embedding-cache hit) is not inspected again.
        self._verdicts: OrderedDict[str, Inspection] = OrderedDict()
        self._verdicts_lock = threading.Lock()
        # Content hash and size by encoded-bytes digest: a repeated image whose embedding is cached is not
        # decoded again (hemascope.imaging.memo).
        self.decodes = DecodeMemo(settings.decode_memo_entries)

    # lifecycle -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Hashes the weights, makes or finds the ONNX export, opens the session, starts the batcher."""
        started = time.perf_counter()
        preprocessing = self._resolve_preprocessing()
        weights = weights_file(self.spec.name, self.settings.resnet50_checkpoint)
        weights_hash = file_sha256(weights)
        path = ensure_onnx(self.spec, weights, weights_hash, self.settings.model_cache_dir)
        self._embedder = OnnxEmbedder(
            path,
            intra_op_threads=self.settings.intra_op_threads,
            use_gpu=self.settings.use_gpu,
            allow_spinning=self.settings.allow_spinning,
        )
        self._info = BackboneInfo(
            self.spec, weights_hash, weights.name, self._embedder.providers, preprocessing
        )
        self._batcher = MicroBatcher(
            self._run_batch,
            name=f"feature-{self.spec.name}",
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_batch_wait_ms / 1000,
            max_queue=self.settings.max_queue,
        )
        if self.settings.preprocess_threads:
            self._prep_pool = ThreadPoolExecutor(
                self.settings.preprocess_threads, thread_name_prefix=f"feature-prep-{self.spec.name}"
            )
        log.info(
            "backbone_loaded",
            backbone=self.spec.name,
            weights=weights_hash[:12],
            providers=list(self._embedder.providers),
            preprocessing=preprocessing.version,
            seconds=round(time.perf_counter() - started, 2),
        )

    def close(self) -> None:
        if self._prep_pool is not None:
            self._prep_pool.shutdown(wait=True, cancel_futures=True)
        if self._batcher is not None:
            self._batcher.close()
        self.cache.close()

    def _resolve_preprocessing(self) -> Preprocessing:
        """The configured option; ConfigurationError when unknown or not what the graph expects."""
        try:
            option = get_preprocessing(self.settings.preprocessing)
        except NotFound as exc:
            raise ConfigurationError(
                f"HEMASCOPE_FEATURE_PREPROCESSING: {exc.message}", reason="UNKNOWN_PREPROCESSING"
            ) from None
        check_graph_compatible(self.spec, option)
        return option

    @property
    def info(self) -> BackboneInfo:
        if self._info is None:
            raise Unavailable("the backbone is still loading; retry shortly", reason="NOT_READY")
        return self._info

    # embedding -------------------------------------------------------------------------------------------
    def check_backbone(self, requested: str) -> None:
        if requested and requested != self.spec.name:
            raise NotFound(
                f"backbone {requested!r} is not served here; this service runs {self.spec.name!r}",
                reason="UNKNOWN_BACKBONE",
                field="backbone",
            )

    def embed(
        self, image: ImageInput, *, skip_cache: bool = False, timeout: float | None = None
    ) -> EmbedResult:
        """Embeds one image; ``timeout`` is the caller's remaining deadline in seconds."""
        with step(self._tracer, "feature.embed", backbone=self.spec.name) as span:
            deadline = None if timeout is None else time.monotonic() + timeout
            outcome = self._wait_prepared(self._start(image, skip_cache, deadline), deadline)
            if isinstance(outcome, HemascopeError):
                raise outcome
            result = self._finish(outcome, deadline)
            if isinstance(result, HemascopeError):
                raise result
            set_attributes(span, {"cache_hit": result.cache_hit})
            return result

    def embed_many(
        self,
        images: Sequence[ImageInput],
        *,
        skip_cache: bool = False,
        timeout: float | None = None,
        inspect: bool = True,
    ) -> list[EmbedResult | HemascopeError]:
        """Embeds a batch; each item gets a result or its own error, in order.

        ``inspect=False`` is for callers that want the vectors only (embedding a training set): the input
        check and the acquisition fingerprint are skipped (results carry neither), and only a blank image is
        still refused (BLANK_IMAGE, the check's first rule). The vectors are the same either way."""
        with step(self._tracer, "feature.embed_batch", backbone=self.spec.name, items=len(images)) as span:
            self.check_batch(images)
            deadline = None if timeout is None else time.monotonic() + timeout
            self._batcher_or_raise()
            # Every image is started before any is awaited: with the pool they are prepared in parallel.
            started = [self._start(image, skip_cache, deadline, inspect) for image in images]
            outcomes = [self._wait_prepared(item, deadline) for item in started]
            results = [self._finish(outcome, deadline) for outcome in outcomes]
            hits = sum(1 for r in results if isinstance(r, EmbedResult) and r.cache_hit)
            set_attributes(
                span, {"cache_hits": hits, "failed": sum(isinstance(r, HemascopeError) for r in results)}
            )
            return results

    def embed_direct(self, images: Sequence[ImageInput]) -> list[EmbedResult | HemascopeError]:
        """Embeds ``images`` in one session run on the calling thread, past the cache and the micro-batcher.

        For a caller that owns whole batches (the batch pipeline's workers): the same decoding, input check,
        preprocessing and session as :meth:`embed`; each item gets a result or its own error, in order.
        """
        outcomes: list[_Prepared | HemascopeError] = []
        for image in images:
            try:
                outcomes.append(self._prepare(image, skip_cache=True))
            except HemascopeError as exc:
                outcomes.append(exc)
        pixels = [o.pixels for o in outcomes if isinstance(o, _Prepared) and o.pixels is not None]
        vectors = iter(self._run_batch(pixels) if pixels else [])
        return [
            o if isinstance(o, HemascopeError) else self._result(o, next(vectors), hit=False)
            for o in outcomes
        ]

    def check_batch(self, images: Sequence[ImageInput]) -> None:
        check_batch(images, self.settings.max_batch_items, self.settings.max_batch_bytes)

    # internals -------------------------------------------------------------------------------------------
    def _batcher_or_raise(self) -> MicroBatcher[NDArray[np.uint8], NDArray[np.float32]]:
        if self._batcher is None:
            raise Unavailable("the backbone is still loading; retry shortly", reason="NOT_READY")
        return self._batcher

    def _start(
        self, image: ImageInput, skip_cache: bool, deadline: float | None, inspect: bool = True
    ) -> Future[_Prepared] | _Prepared | HemascopeError:
        """Decodes, checks, looks up and preprocesses ``image`` and queues a miss for the model: on the
        preprocessing pool when there is one (a future), else here."""
        if self._prep_pool is None:
            try:
                return self._prepare_and_queue(image, skip_cache, deadline, inspect)
            except HemascopeError as exc:
                return exc
        try:
            return self._prep_pool.submit(self._prepare_and_queue, image, skip_cache, deadline, inspect)
        except RuntimeError:  # the pool was shut down: the service is stopping
            return Unavailable("the feature service is shutting down; retry shortly")

    def _wait_prepared(
        self, started: Future[_Prepared] | _Prepared | HemascopeError, deadline: float | None
    ) -> _Prepared | HemascopeError:
        if not isinstance(started, Future):
            return started
        try:
            return started.result(timeout=_remaining(deadline))
        except TimeoutError:
            started.cancel()
            return DeadlineExceeded("deadline passed before this image was preprocessed")
        except HemascopeError as exc:
            return exc

    def _prepare_and_queue(
        self, image: ImageInput, skip_cache: bool, deadline: float | None, inspect: bool = True
    ) -> _Prepared:
        prepared = self._prepare(image, skip_cache, inspect)
        if prepared.pixels is not None:
            prepared.future = self._batcher_or_raise().enqueue(prepared.pixels, _remaining(deadline))
        return prepared

    def _prepare(self, image: ImageInput, skip_cache: bool, inspect: bool = True) -> _Prepared:
        info = self.info
        memo_key = DecodeMemo.key(image.data, image.media_type) if self.decodes.entries else b""
        known, missed = (None, False) if skip_cache else self._known(image, memo_key)
        if known is not None:
            return known
        decoded = decode_image(image.data, self.limits, image.media_type)
        pixel_hash = content_hash(decoded.pixels)
        self.decodes.put(memo_key, SeenImage(pixel_hash, decoded.width, decoded.height))
        # The input check and a cell-crop option both start from the same working image: made once, when
        # the first of them needs it.
        working = cache(partial(working_image, decoded.pixels))
        inspection = None
        if inspect:
            inspection = self._inspect(decoded, pixel_hash, working)
        else:
            self._refuse_blank(decoded, working)
        key = self._cache_key(pixel_hash)
        cached = None if skip_cache or missed else self._cached(key)  # missed: just asked, not there
        prepared = _Prepared(image, decoded.width, decoded.height, key, cached, inspection)
        if cached is None:
            option = info.preprocessing
            prepared.pixels = option.prepare(decoded.pixels, working() if option.cell_crop else None)
        return prepared

    def _known(self, image: ImageInput, memo_key: bytes) -> tuple[_Prepared | None, bool]:
        """A cache hit answered without decoding: these bytes were decoded before (the decode memo), their
        inspection is remembered and their embedding is cached. Else None, and whether the cache was asked
        (and had nothing)."""
        seen = self.decodes.get(memo_key)
        inspection = self._remembered(seen.content_hash) if seen is not None else None
        if seen is None or inspection is None:
            return None, False
        key = self._cache_key(seen.content_hash)
        cached = self._cached(key)
        if cached is None:
            return None, True
        self._judge(inspection)  # counted once, and a blank image refused, as when decoded
        return _Prepared(image, seen.width, seen.height, key, cached, inspection), False

    def _cache_key(self, pixel_hash: str) -> CacheKey:
        info = self.info
        return CacheKey(pixel_hash, self.spec.name, info.weights_hash, info.preprocessing.version)

    def _cached(self, key: CacheKey) -> NDArray[np.float32] | None:
        cached = self.cache.get(key)
        if cached is not None and cached.shape != (self.spec.dimension,):
            return None
        return cached

    def _remembered(self, pixel_hash: str) -> Inspection | None:
        with self._verdicts_lock:
            inspection = self._verdicts.get(pixel_hash)
            if inspection is not None:
                self._verdicts.move_to_end(pixel_hash)
            return inspection

    def _inspect(self, decoded: DecodedImage, pixel_hash: str, working: Callable[[], Working]) -> Inspection:
        """The input check's verdict (None when it is off) and the acquisition fingerprint; a blank image is
        refused here. Inspections of the last :data:`VERDICTS_KEPT` distinct images are remembered."""
        inspection = self._remembered(pixel_hash)
        if inspection is None:
            check = check_input(decoded.pixels, working=working()) if self.settings.input_check else None
            inspection = Inspection(check, fingerprint(decoded.pixels))
            with self._verdicts_lock:
                self._verdicts[pixel_hash] = inspection
                while len(self._verdicts) > VERDICTS_KEPT:
                    self._verdicts.popitem(last=False)
        self._judge(inspection)
        return inspection

    def _refuse_blank(self, decoded: DecodedImage, working: Callable[[], Working]) -> None:
        """Without an inspection, a blank image is still refused when the input check is on, as it would."""
        reason = blank_reason(decoded.pixels, working=working()) if self.settings.input_check else None
        if reason is not None:
            raise InvalidArgument(reason, reason="BLANK_IMAGE", field="image.data")

    @staticmethod
    def _judge(inspection: Inspection) -> None:
        """Counts the input check's verdict; a blank image is refused."""
        check = inspection.check
        if check is not None:
            INPUT_CHECKS.labels(check.kind.value).inc()
            if check.kind is InputKind.BLANK:
                raise InvalidArgument(check.reason, reason="BLANK_IMAGE", field="image.data")

    def _finish(
        self, outcome: _Prepared | HemascopeError, deadline: float | None
    ) -> EmbedResult | HemascopeError:
        if isinstance(outcome, HemascopeError):
            return outcome
        if outcome.cached is not None:
            return self._result(outcome, outcome.cached, hit=True)
        assert outcome.future is not None
        try:
            vector = outcome.future.result(timeout=_remaining(deadline))
        except TimeoutError:
            outcome.future.cancel()
            return DeadlineExceeded("deadline passed before this image was embedded")
        except HemascopeError as exc:
            return exc
        self.cache.put(outcome.key, vector)
        return self._result(outcome, vector, hit=False)

    def _run_batch(self, items: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        assert self._embedder is not None
        out = self._embedder.run(np.stack(items))
        return list(out)

    @staticmethod
    def _result(prepared: _Prepared, vector: NDArray[np.float32], *, hit: bool) -> EmbedResult:
        return EmbedResult(
            vector=vector,
            content_hash=prepared.key.content_hash,
            cache_hit=hit,
            width=prepared.width,
            height=prepared.height,
            image_id=prepared.image.image_id,
            input_check=None if prepared.inspection is None else prepared.inspection.check,
            acquisition=None if prepared.inspection is None else prepared.inspection.acquisition,
        )


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
