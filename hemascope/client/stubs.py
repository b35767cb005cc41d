"""The generated protobuf messages and gRPC stubs of the public API, published for other services.

They are the modules of :mod:`hemascope.v1` (generated from ``protos/hemascope/v1`` with ``.pyi`` type
stubs), re-exported here so a service that integrates with Hemascope needs one import::

    from hemascope.client.stubs import analysis_pb2, analysis_pb2_grpc, common_pb2
"""

from hemascope.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    analysis_pb2,
    analysis_pb2_grpc,
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    detector_pb2,
    detector_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    feature_pb2,
    feature_pb2_grpc,
)

__all__ = [
    "admin_pb2",
    "admin_pb2_grpc",
    "analysis_pb2",
    "analysis_pb2_grpc",
    "classifier_pb2",
    "classifier_pb2_grpc",
    "common_pb2",
    "detector_pb2",
    "detector_pb2_grpc",
    "explain_pb2",
    "explain_pb2_grpc",
    "feature_pb2",
    "feature_pb2_grpc",
]
