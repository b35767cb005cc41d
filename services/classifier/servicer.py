"""The thin gRPC layer of the classifier service: protobuf in, core call, protobuf out."""

from __future__ import annotations

import grpc

from hemascope.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier import converters
from services.classifier.core import ClassifierCore


class ClassifierServicer(classifier_pb2_grpc.ClassifierServiceServicer):
    def __init__(self, core: ClassifierCore) -> None:
        self.core = core

    def Classify(  # noqa: N802 (gRPC method name)
        self, request: classifier_pb2.ClassifyRequest, context: grpc.ServicerContext
    ) -> classifier_pb2.ClassifyResponse:
        result = self.core.classify(
            converters.embeddings_from_request(request), list(request.models), request.site_profile
        )
        return converters.classify_response(result)

    def ListModels(  # noqa: N802
        self, request: classifier_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> classifier_pb2.ListModelsResponse:
        return converters.list_models_response(
            self.core.served,
            max_embeddings=self.core.settings.max_embeddings,
            last_reload_error=self.core.last_reload_error,
        )

    def ReloadBundle(  # noqa: N802
        self, request: classifier_pb2.ReloadBundleRequest, context: grpc.ServicerContext
    ) -> classifier_pb2.ReloadBundleResponse:
        return converters.reload_response(self.core.reload(request.path or None))
