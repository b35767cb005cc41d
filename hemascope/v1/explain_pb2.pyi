from hemascope.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("image", "embedding", "model", "target_class", "method", "skip_cache", "overlay")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_CLASS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    embedding: _common_pb2.Embedding
    model: str
    target_class: str
    method: str
    skip_cache: bool
    overlay: str
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., model: _Optional[str] = ..., target_class: _Optional[str] = ..., method: _Optional[str] = ..., skip_cache: _Optional[bool] = ..., overlay: _Optional[str] = ...) -> None: ...

class HeatMap(_message.Message):
    __slots__ = ("height", "width", "values")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: int
    y0: int
    x1: int
    y1: int
    def __init__(self, x0: _Optional[int] = ..., y0: _Optional[int] = ..., x1: _Optional[int] = ..., y1: _Optional[int] = ...) -> None: ...

class ExplainTimings(_message.Message):
    __slots__ = ("decode_ms", "queue_ms", "cam_ms", "render_ms", "total_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    CAM_MS_FIELD_NUMBER: _ClassVar[int]
    RENDER_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    queue_ms: float
    cam_ms: float
    render_ms: float
    total_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., cam_ms: _Optional[float] = ..., render_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("heat_map", "overlay_png", "class_name", "class_probability", "predicted_class", "predicted_probability", "method", "model", "model_version", "bundle_version", "content_hash", "cache_hit", "timings", "width", "height", "image_id", "probabilities_from_embedding", "region", "overlay", "overlay_width", "overlay_height")
    HEAT_MAP_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FROM_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_WIDTH_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    heat_map: HeatMap
    overlay_png: bytes
    class_name: str
    class_probability: float
    predicted_class: str
    predicted_probability: float
    method: str
    model: str
    model_version: str
    bundle_version: str
    content_hash: str
    cache_hit: bool
    timings: ExplainTimings
    width: int
    height: int
    image_id: str
    probabilities_from_embedding: bool
    region: Region
    overlay: str
    overlay_width: int
    overlay_height: int
    def __init__(self, heat_map: _Optional[_Union[HeatMap, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., class_name: _Optional[str] = ..., class_probability: _Optional[float] = ..., predicted_class: _Optional[str] = ..., predicted_probability: _Optional[float] = ..., method: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., bundle_version: _Optional[str] = ..., content_hash: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., timings: _Optional[_Union[ExplainTimings, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., image_id: _Optional[str] = ..., probabilities_from_embedding: _Optional[bool] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., overlay: _Optional[str] = ..., overlay_width: _Optional[int] = ..., overlay_height: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExplainableModel(_message.Message):
    __slots__ = ("name", "version", "kind", "methods", "default_method", "differentiable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHOD_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    kind: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    default_method: str
    differentiable: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., default_method: _Optional[str] = ..., differentiable: _Optional[bool] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("bundle_version", "backbone", "weights_hash", "preprocessing", "classes", "models", "max_image_bytes", "max_image_pixels", "max_concurrent", "max_queue", "cache_backend", "max_overlay_pixels")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    CACHE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_OVERLAY_PIXELS_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    backbone: str
    weights_hash: str
    preprocessing: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ExplainableModel]
    max_image_bytes: int
    max_image_pixels: int
    max_concurrent: int
    max_queue: int
    cache_backend: str
    max_overlay_pixels: int
    def __init__(self, bundle_version: _Optional[str] = ..., backbone: _Optional[str] = ..., weights_hash: _Optional[str] = ..., preprocessing: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ExplainableModel, _Mapping]]] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_concurrent: _Optional[int] = ..., max_queue: _Optional[int] = ..., cache_backend: _Optional[str] = ..., max_overlay_pixels: _Optional[int] = ...) -> None: ...
