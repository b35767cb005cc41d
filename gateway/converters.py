"""Protobuf <-> domain types for the gateway's AnalysisService."""

from __future__ import annotations

from gateway.domain import AnalysisReport, AnalyzeOptions, Capabilities, EmbeddingInfo, SiteReport
from hemascope.consensus import DEFAULT_MALIGNANT_THRESHOLD
from hemascope.errors import HemascopeError, InvalidArgument, echo
from hemascope.imaging.inputs import ImageInput
from hemascope.interceptors import error_detail
from hemascope.v1 import analysis_pb2, common_pb2

#: Longest name (model, class, method, overlay, media type) a request may carry; names are short words.
MAX_NAME_CHARS = 128
#: Longest image id (the caller's own reference, returned unchanged, never logged or audited).
MAX_IMAGE_ID_CHARS = 256
MAX_MODELS = 32


def checked_name(value: str, field: str, limit: int = MAX_NAME_CHARS) -> str:
    """``value`` when it is a plausible name: at most ``limit`` characters and no NUL or other control
    characters; INVALID_ARGUMENT (reason ``BAD_STRING``) naming the field otherwise."""
    if len(value) > limit:
        raise InvalidArgument(
            f"{field} is {len(value)} characters long; the limit is {limit}", reason="BAD_STRING", field=field
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidArgument(
            f"{field} {echo(value)} holds a NUL or another control character",
            reason="BAD_STRING",
            field=field,
        )
    return value


def image_from_request(request: analysis_pb2.AnalyzeRequest) -> ImageInput:
    """The request's image; INVALID_ARGUMENT when there is none."""
    if not request.HasField("image") or not request.image.data:
        raise InvalidArgument("the request holds no image bytes", reason="EMPTY_IMAGE", field="image.data")
    image = request.image
    media_type = checked_name(image.media_type, "image.media_type")
    image_id = checked_name(image.image_id, "image.image_id", MAX_IMAGE_ID_CHARS)
    return ImageInput(data=image.data, media_type=media_type, image_id=image_id)


def options_from_request(request: analysis_pb2.AnalyzeRequest) -> AnalyzeOptions:
    o = request.options
    if len(o.models) > MAX_MODELS:
        raise InvalidArgument(
            f"options.models names {len(o.models)} models; the limit is {MAX_MODELS}",
            reason="BAD_OPTION",
            field="options.models",
        )
    for index, model in enumerate(o.models):
        checked_name(model, f"options.models[{index}]")
    for name in ("explain_model", "explain_class", "explain_method", "explain_overlay"):
        checked_name(getattr(o, name), f"options.{name}")
    return AnalyzeOptions(
        models=tuple(o.models),
        skip_classification=o.skip_classification,
        detect=o.detect,
        explain=o.explain,
        explain_model=o.explain_model,
        explain_class=o.explain_class,
        explain_method=o.explain_method,
        explain_overlay=o.explain_overlay,
        detect_confidence=o.detect_confidence,
        detect_iou=o.detect_iou,
        malignant_threshold=o.malignant_threshold or DEFAULT_MALIGNANT_THRESHOLD,
    )


def _embedding(info: EmbeddingInfo) -> analysis_pb2.EmbeddingInfo:
    return analysis_pb2.EmbeddingInfo(
        backbone=info.backbone,
        weights_hash=info.weights_hash,
        preprocessing=info.preprocessing,
        cache_hit=info.cache_hit,
    )


def analyze_response(report: AnalysisReport) -> analysis_pb2.AnalyzeResponse:
    response = analysis_pb2.AnalyzeResponse(
        image_id=report.image_id,
        content_hash=report.content_hash,
        width=report.width,
        height=report.height,
        parts=[
            analysis_pb2.PartStatus(
                part=p.part, code=p.code.value[0], reason=p.reason, message=p.message, elapsed_ms=p.elapsed_ms
            )
            for p in report.parts
        ],
        timings=[analysis_pb2.StageTiming(stage=stage, ms=ms) for stage, ms in report.timings.items()],
        model_versions=report.model_versions,
    )
    if report.embedding is not None:
        response.embedding.CopyFrom(_embedding(report.embedding))
    if report.input_check is not None:
        response.input_check.CopyFrom(report.input_check)
    if report.classification is not None:
        c = report.classification
        v = c.consensus
        response.classification.CopyFrom(
            analysis_pb2.CellClassification(
                predictions=c.predictions,
                bundle_version=c.bundle_version,
                consensus_label=v.label,
                consensus_probability=v.probability,
                agreement=v.agreement,
                malignant_probability=v.malignant_probability,
                malignant=v.malignant,
                refer=v.refer,
                refer_reasons=v.refer_reasons,
                atypical_acquisition=v.atypical_acquisition,
                malignant_unconfirmed=v.malignant_unconfirmed,
            )
        )
    if report.site is not None:
        response.site.CopyFrom(site_status(report.site))
    if report.detection is not None:
        d = report.detection
        response.detection.CopyFrom(analysis_pb2.CellDetection(boxes=d.boxes, model_version=d.model_version))
    if report.explanation is not None:
        e = report.explanation
        response.explanation.CopyFrom(
            analysis_pb2.CellExplanation(
                model=e.model,
                model_version=e.model_version,
                method=e.method,
                class_name=e.class_name,
                class_probability=e.class_probability,
                heat_map=e.heat_map,
                overlay_png=e.overlay_png,
                region=e.region,
                overlay=e.overlay,
            )
        )
    return response


def stream_result(request_id: str, report: AnalysisReport) -> analysis_pb2.AnalyzeStreamResponse:
    return analysis_pb2.AnalyzeStreamResponse(request_id=request_id, result=analyze_response(report))


def stream_error(request_id: str, error: HemascopeError) -> analysis_pb2.AnalyzeStreamResponse:
    detail: common_pb2.ErrorDetail = error_detail(error)
    return analysis_pb2.AnalyzeStreamResponse(request_id=request_id, error=detail)


def site_status(site: SiteReport, expected_share: float = 0.0) -> analysis_pb2.SiteStatus:
    return analysis_pb2.SiteStatus(
        status=site.status.value,
        atypical_share=site.atypical_share,
        window_images=site.window_images,
        window=site.window,
        flag_share=site.flag_share,
        expected_share=expected_share,
        images_seen=site.images_seen,
    )


def capabilities_response(
    caps: Capabilities, site: SiteReport | None = None
) -> analysis_pb2.GetCapabilitiesResponse:
    response = analysis_pb2.GetCapabilitiesResponse(
        classes=caps.classes,
        malignant_classes=caps.malignant_classes,
        models=[
            analysis_pb2.ClassifierModel(name=m.name, version=m.version, explain_methods=m.explain_methods)
            for m in caps.models
        ],
        bundle_version=caps.bundle_version,
        detector_version=caps.detector_version,
        detector_classes=caps.detector_classes,
        max_image_bytes=caps.max_image_bytes,
        max_image_pixels=caps.max_image_pixels,
        max_stream_in_flight=caps.max_stream_in_flight,
        max_streams_per_caller=caps.max_streams_per_caller,
        services=[
            analysis_pb2.ServiceState(
                name=s.name, serving=s.serving, circuit_open=s.circuit_open, not_running=s.not_running
            )
            for s in caps.services
        ],
    )
    if caps.embedding is not None:
        response.embedding.CopyFrom(_embedding(caps.embedding))
    if site is not None:
        response.site.CopyFrom(site_status(site, caps.expected_atypical_rate))
    return response
