"""The thin gRPC layer of the detector service: protobuf in, core call, protobuf out."""

from __future__ import annotations

import grpc

from hemascope.deadlines import remaining_seconds
from hemascope.v1 import detector_pb2, detector_pb2_grpc
from services.detector import converters
from services.detector.core import DetectOptions, DetectorCore


class DetectorServicer(detector_pb2_grpc.DetectorServiceServicer):
    def __init__(self, core: DetectorCore) -> None:
        self.core = core

    def Detect(  # noqa: N802 (gRPC method name)
        self, request: detector_pb2.DetectRequest, context: grpc.ServicerContext
    ) -> detector_pb2.DetectResponse:
        result = self.core.detect(
            converters.image_from_proto(request.image),
            converters.options_from_proto(request.options),
            timeout=remaining_seconds(context),
        )
        return converters.detect_response(result, self.core.info)

    def DetectBatch(  # noqa: N802
        self, request: detector_pb2.DetectBatchRequest, context: grpc.ServicerContext
    ) -> detector_pb2.DetectBatchResponse:
        images = [converters.image_from_proto(image) for image in request.images]
        outcomes = self.core.detect_many(
            images, converters.options_from_proto(request.options), timeout=remaining_seconds(context)
        )
        return converters.batch_response(images, outcomes, self.core.info)

    def GetModelInfo(  # noqa: N802
        self, request: detector_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> detector_pb2.GetModelInfoResponse:
        defaults = self.core.thresholds(DetectOptions())
        return converters.model_info_response(self.core.info, defaults, self.core.settings)
