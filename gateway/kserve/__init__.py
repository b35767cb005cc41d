"""Open Inference Protocol (KServe v2 ``inference.GRPCInferenceService``) on the gateway's port.

Built on the official generated code shipped in ``tritonclient.grpc`` (``service_pb2*``), so Triton and
KServe clients call the gateway unchanged. A thin adapter over the gateway's data plane
(:mod:`gateway.dataplane`), like AnalysisService: :mod:`.codec` (raw tensors), :mod:`.converters` (requests
to images and options, reports to responses) and :mod:`.servicer` (the RPCs).
"""

from __future__ import annotations

from gateway.kserve.codec import decode_bytes_tensor, encode_bytes_tensor
from gateway.kserve.servicer import SERVICE_NAME, InferenceServicer, add_to_server

__all__ = ["SERVICE_NAME", "InferenceServicer", "add_to_server", "decode_bytes_tensor", "encode_bytes_tensor"]
