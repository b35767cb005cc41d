"""The explain service's core: image + model (+ class, method, embedding) -> heat map and overlay. No gRPC.

``load`` loads the bundle, refuses a backbone whose weights file is not the one the bundle was trained on,
and builds the CAM layer (:mod:`services.explain.cam`) on the backbone split for CAM methods. A call:
decode (the kernel's decoder and limits) -> content hash -> cache lookup -> on a miss, wait for a slot
(:class:`~services.explain.admission.Admission`), prepare the pixels with the *bundle's* preprocessing and
run the CAM method -> put the map back into the original frame -> overlay PNG.

Memory is bounded per call: an image over ``max_overlay_pixels`` is scaled down to that size right after
hashing, so the preprocessing, the CAM, the cell outline and the overlay (several float arrays of the
image's size) never work at the full size, and at most ``max_concurrent`` such large images are decoded
at once. The region and the cached crop box stay in the original image's coordinates.
"""

from __future__ import annotations

import io
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from opentelemetry import trace
from PIL import Image

from hemascope.bundle import BundleError, LoadedBundle, load_bundle
from hemascope.cache.seal import Sealer
from hemascope.errors import (
    ConfigurationError,
    HemascopeError,
    InvalidArgument,
    NotFound,
    Unavailable,
    echo,
)
from hemascope.files import file_sha256
from hemascope.imaging.decode import ImageLimits, decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.inputs import ImageInput
from hemascope.imaging.preprocess import Preprocessing, preprocessing_for_version
from hemascope.logs import get_logger
from hemascope.tracing import set_attributes, step
from services.classifier.inputs import EmbeddingInput, embedding_matrix
from services.explain.admission import Admission
from services.explain.cache import Box, CachedHeat, ExplainCache, ExplainKey, build_explain_cache
from services.explain.cam import GRADIENT_METHODS, METHODS, CamExplainer, default_method
from services.explain.heads import is_differentiable
from services.explain.metrics import CAM_SECONDS
from services.explain.network import split_backbone
from services.explain.overlay import DEFAULT_STYLE, cell_mask, check_style, render, to_png
from services.explain.settings import ExplainSettings
from services.feature.backbones import check_graph_compatible, get_spec, weights_file

log = get_logger(__name__)


@dataclass(frozen=True)
class Loaded:
    """Everything a call needs, built once by :meth:`ExplainCore.load`."""

    bundle: LoadedBundle
    explainer: CamExplainer
    preprocessing: Preprocessing
    weights_hash: str

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.bundle.manifest.classes)


@dataclass(frozen=True)
class ModelMethods:
    name: str
    version: str
    kind: str
    methods: tuple[str, ...]
    default_method: str
    differentiable: bool


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    queue_ms: float
    cam_ms: float
    render_ms: float
    total_ms: float


@dataclass(frozen=True)
class Explanation:
    heatmap: NDArray[np.float32]  # the CAM grid (h x w), in [0, 1]
    overlay_png: bytes  # original size
    class_name: str
    class_probability: float
    predicted_class: str
    predicted_probability: float
    method: str
    model: str
    model_version: str
    bundle_version: str
    content_hash: str
    cache_hit: bool
    width: int
    height: int
    region: Box  # where the map lies on the original image
    from_embedding: bool
    timings: Timings
    image_id: str = ""
    overlay: str = DEFAULT_STYLE
    overlay_width: int = 0
    """The overlay PNG's width: ``width``, or less when the image was over max_overlay_pixels."""
    overlay_height: int = 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def header_pixels(data: bytes) -> int:
    """Width x height from the image's header (nothing decoded); 0 when the header cannot be read (the
    decoder then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return int(opened.width) * int(opened.height)
    except Exception:
        return 0


def fit_pixels(pixels: NDArray[np.uint8], max_pixels: int) -> tuple[NDArray[np.uint8], float]:
    """``pixels`` scaled down (area averaging, aspect kept) to at most ``max_pixels``, with the scale
    applied (1.0: unchanged)."""
    height, width = pixels.shape[:2]
    if width * height <= max_pixels:
        return pixels, 1.0
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX), dtype=np.uint8)
    return small, size[0] / width


def scale_box(box: Box | None, scale: float) -> Box | None:
    """``box`` (x0, y0, x1, y1) multiplied by ``scale``, rounded to whole pixels."""
    if box is None or scale == 1.0:
        return box
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    return (x0, y0, x1, y1)


class ExplainCore:
    """Explains the models of one bundle on the backbone it was trained on."""

    def __init__(
        self, settings: ExplainSettings, cache: ExplainCache | None = None, tracer: trace.Tracer | None = None
    ) -> None:
        self.settings = settings
        self._tracer = tracer or trace.NoOpTracer()
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self.admission = Admission(settings.max_concurrent, settings.max_queue)
        self.large_images = Admission(
            settings.max_concurrent, settings.max_queue, what="large image decodes", metrics=False
        )
        self.cache = cache or build_explain_cache(
            settings.redis_url,
            prefix=settings.cache_prefix,
            ttl_s=settings.cache_ttl_s,
            memory_entries=settings.memory_cache_entries,
            redis_timeout_s=settings.redis_timeout_ms / 1000,
            sealer=Sealer.for_settings(settings.cache_key_file) if settings.redis_url else None,
            redis_password=settings.redis_password_value(),
        )
        self._loaded: Loaded | None = None

    # lifecycle -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Loads the bundle and its backbone; BundleError / ConfigurationError with a clear message."""
        started = time.perf_counter()
        if self.settings.bundle is None:
            raise BundleError(
                "no model bundle configured: set HEMASCOPE_EXPLAIN_BUNDLE (or --bundle) to a bundle directory"
            )
        bundle = load_bundle(self.settings.bundle)
        manifest = bundle.manifest
        weights = weights_file(manifest.backbone, self.settings.resnet50_checkpoint)
        weights_hash = file_sha256(weights)
        if weights_hash != manifest.weights_hash:
            raise ConfigurationError(
                f"backbone weights {weights.name} have SHA-256 {weights_hash}, but bundle "
                f"{manifest.bundle_version} was trained on {manifest.backbone} weights with SHA-256 "
                f"{manifest.weights_hash}; configure the bundle's weights",
                reason="WRONG_WEIGHTS",
            )
        try:
            preprocessing = preprocessing_for_version(manifest.preprocessing)
        except NotFound as exc:
            raise ConfigurationError(
                f"bundle {manifest.bundle_version}: {exc.message}", reason="UNKNOWN_PREPROCESSING"
            ) from None
        check_graph_compatible(get_spec(manifest.backbone), preprocessing)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        engine, batch = self.settings.ablation_engine, self.settings.ablation_batch
        backbone = split_backbone(manifest.backbone, weights)
        explainer = CamExplainer(backbone, bundle, ablation_batch=batch, ablation_engine=engine)
        self._loaded = Loaded(bundle, explainer, preprocessing, weights_hash)
        log.info(
            "explainer_loaded",
            bundle=manifest.bundle_version,
            backbone=manifest.backbone,
            preprocessing=preprocessing.version,
            ablation_engine=engine,
            cache=self.cache.backend,
            seconds=round(time.perf_counter() - started, 2),
        )

    def close(self) -> None:
        self.cache.close()

    @property
    def loaded(self) -> Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the bundle and backbone are still loading; retry shortly", reason="NOT_READY")
        return loaded

    def models(self) -> list[ModelMethods]:
        """Every model of the bundle with the CAM methods it accepts."""
        loaded = self.loaded
        out = []
        for name, model in loaded.bundle.models.items():
            differentiable = is_differentiable(loaded.bundle, name)
            methods = tuple(m for m in METHODS if differentiable or m not in GRADIENT_METHODS)
            out.append(
                ModelMethods(
                    name=name,
                    version=model.entry.version,
                    kind=model.entry.kind,
                    methods=methods,
                    default_method=default_method(loaded.bundle, name),
                    differentiable=differentiable,
                )
            )
        return out

    # explanation -----------------------------------------------------------------------------------------
    def explain(
        self,
        image: ImageInput,
        model: str,
        target_class: str = "",
        method: str = "",
        embedding: EmbeddingInput | None = None,
        *,
        skip_cache: bool = False,
        timeout: float | None = None,
        overlay: str = "",
    ) -> Explanation:
        """Explains ``model``'s decision for ``target_class`` (default: its predicted class) on ``image``;
        the overlay is drawn in style ``overlay`` (see :mod:`services.explain.overlay`; empty: focus)."""
        with step(self._tracer, "explain.explain", model=model, from_embedding=embedding is not None) as span:
            loaded = self.loaded
            chosen = loaded.explainer.check(model, method or None)
            set_attributes(span, {"method": chosen, "backbone": loaded.bundle.manifest.backbone})
            result = self._explain(
                loaded, chosen, image, model, target_class, embedding, skip_cache, timeout, overlay
            )
            set_attributes(span, {"cache_hit": result.cache_hit, "class": result.class_name})
            return result

    def _explain(
        self,
        loaded: Loaded,
        chosen: str,
        image: ImageInput,
        model: str,
        target_class: str,
        embedding: EmbeddingInput | None,
        skip_cache: bool,
        timeout: float | None,
        overlay: str,
    ) -> Explanation:
        started = time.perf_counter()
        style = check_style(overlay)
        class_index = self._class_index(loaded, target_class)
        given = self._embedding_probabilities(loaded, model, embedding)
        if class_index is None and given is not None:
            class_index = int(np.argmax(given))  # the caller's embedding decides the predicted class
        with self._large_image_slot(image.data, timeout):
            decoded = decode_image(image.data, self.limits, image.media_type)
            width, height = decoded.width, decoded.height
            digest = content_hash(decoded.pixels)
            pixels, scale = fit_pixels(decoded.pixels, self.settings.max_overlay_pixels)
            del decoded
        key = ExplainKey(
            digest,
            loaded.bundle.manifest.bundle_version,
            loaded.preprocessing.version,
            model,
            loaded.explainer.revision(chosen),
            "" if class_index is None else loaded.classes[class_index],
        )
        decoded_at = time.perf_counter()
        heat = None if skip_cache else self.cache.get(key)
        hit, queue_s, cam_s = heat is not None, 0.0, 0.0
        if heat is None:
            with self.admission.slot(timeout) as queue_s:
                cam_started = time.perf_counter()
                heat = self._compute(loaded, pixels, model, class_index, chosen, scale)
                cam_s = time.perf_counter() - cam_started
            CAM_SECONDS.labels(model, chosen).observe(cam_s)
            self.cache.put(key, heat)
        render_started = time.perf_counter()
        cell = cell_mask(pixels) if style == "focus" else None
        png = to_png(render(pixels, heat.heatmap, scale_box(heat.box, scale), style, cell))
        done = time.perf_counter()
        probabilities = heat.probabilities if given is None else given
        predicted = int(np.argmax(probabilities))
        entry = loaded.bundle.models[model].entry
        return Explanation(
            heatmap=heat.heatmap,
            overlay_png=png,
            class_name=loaded.classes[heat.class_index],
            class_probability=float(probabilities[heat.class_index]),
            predicted_class=loaded.classes[predicted],
            predicted_probability=float(probabilities[predicted]),
            method=heat.method,
            model=model,
            model_version=entry.version,
            bundle_version=loaded.bundle.manifest.bundle_version,
            content_hash=key.content_hash,
            cache_hit=hit,
            width=width,
            height=height,
            region=heat.box if heat.box is not None else (0, 0, width, height),
            from_embedding=given is not None,
            timings=Timings(
                decode_ms=_ms(decoded_at - started),
                queue_ms=_ms(queue_s),
                cam_ms=_ms(cam_s),
                render_ms=_ms(done - render_started),
                total_ms=_ms(done - started),
            ),
            image_id=image.image_id,
            overlay=style,
            overlay_width=int(pixels.shape[1]),
            overlay_height=int(pixels.shape[0]),
        )

    # internals -------------------------------------------------------------------------------------------
    def _prepare(self, pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], Box | None]:
        """The backbone's input (the bundle's preprocessing) and where it lies on ``pixels``.

        The box is None when the option covers the whole frame (a plain resize); for cropping options it is
        the crop, so the map is placed on the crop only (and is zero elsewhere).
        """
        prepared = self.loaded.preprocessing.prepare_report(pixels)
        if prepared.box is None:
            return prepared.pixels, None
        x0, y0, x1, y1 = (round(v) for v in prepared.box)
        return prepared.pixels, (x0, y0, x1, y1)

    def _compute(
        self,
        loaded: Loaded,
        pixels: NDArray[np.uint8],
        model: str,
        class_index: int | None,
        method: str,
        scale: float = 1.0,
    ) -> CachedHeat:
        """The heat map of ``pixels`` (scaled by ``scale`` from the original); its box in the original's
        coordinates."""
        prepared, box = self._prepare(pixels)
        result = loaded.explainer.explain(prepared, model, class_index, method)
        return CachedHeat(
            heatmap=result.heatmap,
            class_index=result.class_index,
            predicted_index=result.predicted_index,
            probabilities=np.asarray(result.probabilities, dtype=np.float64),
            method=result.method,
            box=scale_box(box, 1.0 / scale),
        )

    def _large_image_slot(self, data: bytes, timeout: float | None) -> AbstractContextManager[object]:
        """A slot of :attr:`large_images` for an image whose header says it is over max_overlay_pixels;
        nothing for the rest (their decoding is small and cache hits must not wait)."""
        if header_pixels(data) > self.settings.max_overlay_pixels:
            return self.large_images.slot(timeout)
        return nullcontext()

    @staticmethod
    def _class_index(loaded: Loaded, target_class: str) -> int | None:
        if not target_class:
            return None
        if target_class not in loaded.classes:
            raise InvalidArgument(
                f"unknown class {echo(target_class)}; bundle {loaded.bundle.manifest.bundle_version} has: "
                f"{', '.join(loaded.classes)}",
                reason="UNKNOWN_CLASS",
                field="target_class",
            )
        return loaded.classes.index(target_class)

    @staticmethod
    def _embedding_probabilities(
        loaded: Loaded, model: str, embedding: EmbeddingInput | None
    ) -> NDArray[np.float64] | None:
        """The model's calibrated probabilities for the caller's embedding, checked as the classifier does."""
        if embedding is None:
            return None
        try:
            matrix = embedding_matrix(
                loaded.bundle.manifest, [embedding], max_items=1, require_provenance=False
            )
        except HemascopeError as exc:  # same checks as the classifier; name this request's field
            field = exc.field.replace("embeddings[0]", "embedding")
            raise type(exc)(
                exc.message.replace("embeddings[0]", "embedding"), reason=exc.reason, field=field
            ) from None
        bundle = loaded.bundle
        probs = np.asarray(bundle.models[model].proba(bundle.scale(matrix))[0], dtype=np.float64)
        if not np.isfinite(probs).all():
            raise HemascopeError(f"model {model} produced non-finite probabilities", reason="MODEL_FAILURE")
        probs = np.clip(probs, 0.0, 1.0)  # as the classifier service normalises them
        return probs / max(float(probs.sum()), 1e-12)
