from hemascope.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedRequest(_message.Message):
    __slots__ = ("image", "backbone", "skip_cache")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    backbone: str
    skip_cache: bool
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., backbone: _Optional[str] = ..., skip_cache: _Optional[bool] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embedding", "content_hash", "cache_hit", "image_id", "width", "height")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    embedding: _common_pb2.Embedding
    content_hash: str
    cache_hit: bool
    image_id: str
    width: int
    height: int
    def __init__(self, embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., content_hash: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., image_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class EmbedBatchRequest(_message.Message):
    __slots__ = ("images", "backbone", "skip_cache")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    backbone: str
    skip_cache: bool
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., backbone: _Optional[str] = ..., skip_cache: _Optional[bool] = ...) -> None: ...

class EmbedBatchResult(_message.Message):
    __slots__ = ("image_id", "result", "error")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    result: EmbedResponse
    error: _common_pb2.ErrorDetail
    def __init__(self, image_id: _Optional[str] = ..., result: _Optional[_Union[EmbedResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class EmbedBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EmbedBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EmbedBatchResult, _Mapping]]] = ...) -> None: ...

class GetBackboneInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBackboneInfoResponse(_message.Message):
    __slots__ = ("backbone", "dimension", "weights_hash", "preprocessing", "input_size", "mean", "std", "execution_providers", "max_batch_items", "max_batch_bytes", "max_image_bytes", "max_image_pixels", "weights_source")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    dimension: int
    weights_hash: str
    preprocessing: str
    input_size: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    max_batch_items: int
    max_batch_bytes: int
    max_image_bytes: int
    max_image_pixels: int
    weights_source: str
    def __init__(self, backbone: _Optional[str] = ..., dimension: _Optional[int] = ..., weights_hash: _Optional[str] = ..., preprocessing: _Optional[str] = ..., input_size: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., execution_providers: _Optional[_Iterable[str]] = ..., max_batch_items: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., weights_source: _Optional[str] = ...) -> None: ...
