"""Protobuf <-> domain types for the feature service."""

from __future__ import annotations

from collections.abc import Sequence

from hemascope.errors import HemascopeError
from hemascope.imaging.fingerprint import REVISION as FINGERPRINT_REVISION
from hemascope.imaging.inputcheck import InputCheck, InputKind
from hemascope.imaging.inputs import ImageInput
from hemascope.interceptors import error_detail
from hemascope.v1 import common_pb2, feature_pb2
from services.feature.core import BackboneInfo, EmbedResult


def image_from_proto(image: common_pb2.Image) -> ImageInput:
    return ImageInput(data=image.data, media_type=image.media_type, image_id=image.image_id)


_KINDS = {
    InputKind.SINGLE_CELL: common_pb2.INPUT_KIND_SINGLE_CELL,
    InputKind.MULTIPLE_CELLS: common_pb2.INPUT_KIND_MULTIPLE_CELLS,
    InputKind.NO_CELL: common_pb2.INPUT_KIND_NO_CELL,
    InputKind.NOT_A_CELL_IMAGE: common_pb2.INPUT_KIND_NOT_A_CELL_IMAGE,
    InputKind.BLANK: common_pb2.INPUT_KIND_BLANK,
}


def input_check_to_proto(check: InputCheck) -> common_pb2.InputCheck:
    m = check.measurements
    return common_pb2.InputCheck(
        kind=_KINDS[check.kind],
        reason=check.reason,
        revision=check.revision,
        nuclei=m.nuclei,
        nucleus_fraction=m.nucleus_fraction,
        cell_fraction=m.cell_fraction,
        centre_offset=m.centre_offset,
        stained_fraction=m.stained_fraction,
    )


def embed_response(result: EmbedResult, info: BackboneInfo) -> feature_pb2.EmbedResponse:
    embedding = common_pb2.Embedding(
        values=result.vector.tolist(),
        dimension=int(result.vector.shape[0]),
        backbone=info.spec.name,
        weights_hash=info.weights_hash,
        preprocessing=info.preprocessing.version,
    )
    if result.input_check is not None:
        embedding.input_check.CopyFrom(input_check_to_proto(result.input_check))
    if result.acquisition is not None:
        embedding.acquisition.values.extend(result.acquisition.tolist())
        embedding.acquisition.revision = FINGERPRINT_REVISION
    return feature_pb2.EmbedResponse(
        embedding=embedding,
        content_hash=result.content_hash,
        cache_hit=result.cache_hit,
        image_id=result.image_id,
        width=result.width,
        height=result.height,
    )


def batch_response(
    images: Sequence[ImageInput], outcomes: Sequence[EmbedResult | HemascopeError], info: BackboneInfo
) -> feature_pb2.EmbedBatchResponse:
    results = []
    for image, outcome in zip(images, outcomes, strict=True):
        if isinstance(outcome, HemascopeError):
            results.append(feature_pb2.EmbedBatchResult(image_id=image.image_id, error=error_detail(outcome)))
        else:
            results.append(
                feature_pb2.EmbedBatchResult(image_id=image.image_id, result=embed_response(outcome, info))
            )
    return feature_pb2.EmbedBatchResponse(results=results)


def backbone_info_response(info: BackboneInfo, limits: dict[str, int]) -> feature_pb2.GetBackboneInfoResponse:
    prep = info.preprocessing
    return feature_pb2.GetBackboneInfoResponse(
        backbone=info.spec.name,
        dimension=info.spec.dimension,
        weights_hash=info.weights_hash,
        preprocessing=prep.version,
        input_size=prep.size,
        mean=list(prep.mean),
        std=list(prep.std),
        execution_providers=list(info.providers),
        weights_source=info.weights_source,
        **limits,
    )
