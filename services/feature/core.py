"""The feature service's core: image bytes -> embedding, with caching and micro-batching. No gRPC here."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

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
from hemascope.imaging.decode import DecodedImage, ImageLimits, decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.inputcheck import InputCheck, InputKind, check_input
from hemascope.imaging.inputs import ImageInput, check_batch
from hemascope.imaging.preprocess import Preprocessing, get_preprocessing
from hemascope.logs import get_logger
from hemascope.telemetry import INPUT_CHECKS
from services.feature.backbones import BackboneSpec, check_graph_compatible, get_spec, weights_file
from services.feature.onnx_export import ensure_onnx
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

log = get_logger(__name__)


#: Input-check verdicts remembered per feature service (a few hundred bytes each).
VERDICTS_KEPT = 4096


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
    """An image decoded and looked up in the cache; ``pixels`` set only on a miss."""

    image: ImageInput
    decoded: DecodedImage
    key: CacheKey
    cached: NDArray[np.float32] | None
    check: InputCheck | None = None
    pixels: NDArray[np.uint8] | None = None
    future: Future[NDArray[np.float32]] | None = field(default=None, repr=False)


class FeatureCore:
    """Loads one backbone's ONNX export and embeds images with it."""

    def __init__(self, settings: FeatureSettings, cache: EmbeddingCache | None = None) -> None:
        self.settings = settings
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
        # Input-check verdicts by pixel hash: a repeated image (an embedding-cache hit) is not checked again.
        self._verdicts: OrderedDict[str, InputCheck] = OrderedDict()
        self._verdicts_lock = threading.Lock()

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
        log.info(
            "backbone_loaded",
            backbone=self.spec.name,
            weights=weights_hash[:12],
            providers=list(self._embedder.providers),
            preprocessing=preprocessing.version,
            seconds=round(time.perf_counter() - started, 2),
        )

    def close(self) -> None:
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
        prepared = self._prepare(image, skip_cache)
        if prepared.cached is not None:
            return self._result(prepared, prepared.cached, hit=True)
        assert prepared.pixels is not None
        vector = self._batcher_or_raise().submit(prepared.pixels, timeout)
        self.cache.put(prepared.key, vector)
        return self._result(prepared, vector, hit=False)

    def embed_many(
        self, images: Sequence[ImageInput], *, skip_cache: bool = False, timeout: float | None = None
    ) -> list[EmbedResult | HemascopeError]:
        """Embeds a batch; each item gets a result or its own error, in order."""
        self.check_batch(images)
        deadline = None if timeout is None else time.monotonic() + timeout
        batcher = self._batcher_or_raise()
        outcomes: list[_Prepared | HemascopeError] = []
        for image in images:
            try:
                prepared = self._prepare(image, skip_cache)
                if prepared.pixels is not None:
                    prepared.future = batcher.enqueue(prepared.pixels, _remaining(deadline))
                outcomes.append(prepared)
            except HemascopeError as exc:
                outcomes.append(exc)
        return [self._finish(outcome, deadline) for outcome in outcomes]

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

    def _prepare(self, image: ImageInput, skip_cache: bool) -> _Prepared:
        info = self.info
        decoded = decode_image(image.data, self.limits, image.media_type)
        pixel_hash = content_hash(decoded.pixels)
        check = self._check_input(decoded, pixel_hash)
        key = CacheKey(pixel_hash, self.spec.name, info.weights_hash, info.preprocessing.version)
        cached = None if skip_cache else self.cache.get(key)
        if cached is not None and cached.shape != (self.spec.dimension,):
            cached = None
        prepared = _Prepared(image, decoded, key, cached, check)
        if cached is None:
            prepared.pixels = info.preprocessing.prepare(decoded.pixels)
        return prepared

    def _check_input(self, decoded: DecodedImage, pixel_hash: str) -> InputCheck | None:
        """The input check's verdict (None when it is off); a blank image is refused here. Verdicts of the
        last :data:`VERDICTS_KEPT` distinct images are remembered (the check depends on the pixels only)."""
        if not self.settings.input_check:
            return None
        with self._verdicts_lock:
            check = self._verdicts.get(pixel_hash)
            if check is not None:
                self._verdicts.move_to_end(pixel_hash)
        if check is None:
            check = check_input(decoded.pixels)
            with self._verdicts_lock:
                self._verdicts[pixel_hash] = check
                while len(self._verdicts) > VERDICTS_KEPT:
                    self._verdicts.popitem(last=False)
        INPUT_CHECKS.labels(check.kind.value).inc()
        if check.kind is InputKind.BLANK:
            raise InvalidArgument(check.reason, reason="BLANK_IMAGE", field="image.data")
        return check

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
            width=prepared.decoded.width,
            height=prepared.decoded.height,
            image_id=prepared.image.image_id,
            input_check=prepared.check,
        )


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
