"""The thin gRPC layer of the feature service: protobuf in, core call, protobuf out."""

from __future__ import annotations

import grpc

from hemascope.deadlines import remaining_seconds
from hemascope.v1 import feature_pb2, feature_pb2_grpc
from services.feature import converters
from services.feature.core import FeatureCore


class FeatureServicer(feature_pb2_grpc.FeatureServiceServicer):
    def __init__(self, core: FeatureCore) -> None:
        self.core = core

    def Embed(  # noqa: N802 (gRPC method name)
        self, request: feature_pb2.EmbedRequest, context: grpc.ServicerContext
    ) -> feature_pb2.EmbedResponse:
        self.core.check_backbone(request.backbone)
        result = self.core.embed(
            converters.image_from_proto(request.image),
            skip_cache=request.skip_cache,
            timeout=remaining_seconds(context),
        )
        return converters.embed_response(result, self.core.info)

    def EmbedBatch(  # noqa: N802
        self, request: feature_pb2.EmbedBatchRequest, context: grpc.ServicerContext
    ) -> feature_pb2.EmbedBatchResponse:
        self.core.check_backbone(request.backbone)
        images = [converters.image_from_proto(image) for image in request.images]
        outcomes = self.core.embed_many(
            images, skip_cache=request.skip_cache, timeout=remaining_seconds(context)
        )
        return converters.batch_response(images, outcomes, self.core.info)

    def GetBackboneInfo(  # noqa: N802
        self, request: feature_pb2.GetBackboneInfoRequest, context: grpc.ServicerContext
    ) -> feature_pb2.GetBackboneInfoResponse:
        settings = self.core.settings
        limits = {
            "max_batch_items": settings.max_batch_items,
            "max_batch_bytes": settings.max_batch_bytes,
            "max_image_bytes": settings.max_image_bytes,
            "max_image_pixels": settings.max_image_pixels,
        }
        return converters.backbone_info_response(self.core.info, limits)
