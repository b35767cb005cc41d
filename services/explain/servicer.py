"""The thin gRPC layer of the explain service: protobuf in, core call, protobuf out."""

from __future__ import annotations

import grpc

from hemascope.deadlines import remaining_seconds
from hemascope.v1 import explain_pb2, explain_pb2_grpc
from services.explain import converters
from services.explain.core import ExplainCore


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, core: ExplainCore) -> None:
        self.core = core

    def Explain(  # noqa: N802 (gRPC method name)
        self, request: explain_pb2.ExplainRequest, context: grpc.ServicerContext
    ) -> explain_pb2.ExplainResponse:
        result = self.core.explain(
            converters.image_from_proto(request.image),
            request.model,
            request.target_class,
            request.method,
            converters.embedding_from_request(request),
            skip_cache=request.skip_cache,
            overlay=request.overlay,
            timeout=remaining_seconds(context),
        )
        return converters.explain_response(result)

    def Describe(  # noqa: N802
        self, request: explain_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> explain_pb2.DescribeResponse:
        return converters.describe_response(self.core)
