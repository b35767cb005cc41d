"""Protobuf <-> domain types for the explain service."""

from __future__ import annotations

import numpy as np

from hemascope.imaging.inputs import ImageInput
from hemascope.v1 import common_pb2, explain_pb2
from services.classifier.inputs import EmbeddingInput
from services.explain.core import ExplainCore, Explanation


def image_from_proto(image: common_pb2.Image) -> ImageInput:
    return ImageInput(data=image.data, media_type=image.media_type, image_id=image.image_id)


def embedding_from_request(request: explain_pb2.ExplainRequest) -> EmbeddingInput | None:
    """The request's embedding, or None when the field is absent."""
    if not request.HasField("embedding"):
        return None
    embedding = request.embedding
    return EmbeddingInput(
        values=np.asarray(embedding.values, dtype=np.float32),
        dimension=embedding.dimension,
        backbone=embedding.backbone,
        weights_hash=embedding.weights_hash,
        preprocessing=embedding.preprocessing,
    )


def explain_response(result: Explanation) -> explain_pb2.ExplainResponse:
    height, width = result.heatmap.shape
    x0, y0, x1, y1 = result.region
    timings = result.timings
    return explain_pb2.ExplainResponse(
        heat_map=explain_pb2.HeatMap(
            height=height, width=width, values=result.heatmap.astype(np.float32).ravel().tolist()
        ),
        overlay_png=result.overlay_png,
        class_name=result.class_name,
        class_probability=result.class_probability,
        predicted_class=result.predicted_class,
        predicted_probability=result.predicted_probability,
        method=result.method,
        model=result.model,
        model_version=result.model_version,
        bundle_version=result.bundle_version,
        content_hash=result.content_hash,
        cache_hit=result.cache_hit,
        timings=explain_pb2.ExplainTimings(
            decode_ms=timings.decode_ms,
            queue_ms=timings.queue_ms,
            cam_ms=timings.cam_ms,
            render_ms=timings.render_ms,
            total_ms=timings.total_ms,
        ),
        width=result.width,
        height=result.height,
        image_id=result.image_id,
        probabilities_from_embedding=result.from_embedding,
        overlay=result.overlay,
        region=explain_pb2.Region(x0=x0, y0=y0, x1=x1, y1=y1),
        overlay_width=result.overlay_width or result.width,
        overlay_height=result.overlay_height or result.height,
    )


def describe_response(core: ExplainCore) -> explain_pb2.DescribeResponse:
    loaded = core.loaded
    manifest = loaded.bundle.manifest
    settings = core.settings
    models = [
        explain_pb2.ExplainableModel(
            name=m.name,
            version=m.version,
            kind=m.kind,
            methods=list(m.methods),
            default_method=m.default_method,
            differentiable=m.differentiable,
        )
        for m in core.models()
    ]
    return explain_pb2.DescribeResponse(
        bundle_version=manifest.bundle_version,
        backbone=manifest.backbone,
        weights_hash=loaded.weights_hash,
        preprocessing=loaded.preprocessing.version,
        classes=list(loaded.classes),
        models=models,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_concurrent=settings.max_concurrent,
        max_queue=settings.max_queue,
        cache_backend=core.cache.backend,
        max_overlay_pixels=settings.max_overlay_pixels,
    )
