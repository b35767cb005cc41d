from hemascope.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectOptions(_message.Message):
    __slots__ = ("confidence", "iou", "max_detections")
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    confidence: float
    iou: float
    max_detections: int
    def __init__(self, confidence: _Optional[float] = ..., iou: _Optional[float] = ..., max_detections: _Optional[int] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    options: DetectOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., options: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2", "class_name", "class_id", "score")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    class_name: str
    class_id: int
    score: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., class_name: _Optional[str] = ..., class_id: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("boxes", "width", "height", "content_hash", "image_id", "model_version")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    width: int
    height: int
    content_hash: str
    image_id: str
    model_version: str
    def __init__(self, boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_hash: _Optional[str] = ..., image_id: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class DetectBatchRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    options: DetectOptions
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., options: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class DetectBatchResult(_message.Message):
    __slots__ = ("image_id", "result", "error")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    result: DetectResponse
    error: _common_pb2.ErrorDetail
    def __init__(self, image_id: _Optional[str] = ..., result: _Optional[_Union[DetectResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class DetectBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DetectBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DetectBatchResult, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DetectionMetrics(_message.Message):
    __slots__ = ("precision", "recall", "map50", "map50_95", "images", "instances")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    MAP50_FIELD_NUMBER: _ClassVar[int]
    MAP50_95_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    precision: float
    recall: float
    map50: float
    map50_95: float
    images: int
    instances: int
    def __init__(self, precision: _Optional[float] = ..., recall: _Optional[float] = ..., map50: _Optional[float] = ..., map50_95: _Optional[float] = ..., images: _Optional[int] = ..., instances: _Optional[int] = ...) -> None: ...

class ClassMetrics(_message.Message):
    __slots__ = ("class_name", "metrics")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    metrics: DetectionMetrics
    def __init__(self, class_name: _Optional[str] = ..., metrics: _Optional[_Union[DetectionMetrics, _Mapping]] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "model_sha256", "classes", "input_size", "execution_providers", "metrics", "class_metrics", "metrics_split", "default_options", "max_detections_limit", "max_batch_items", "max_batch_bytes", "max_image_bytes", "max_image_pixels")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CLASS_METRICS_FIELD_NUMBER: _ClassVar[int]
    METRICS_SPLIT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    model_sha256: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    input_size: int
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    metrics: DetectionMetrics
    class_metrics: _containers.RepeatedCompositeFieldContainer[ClassMetrics]
    metrics_split: str
    default_options: DetectOptions
    max_detections_limit: int
    max_batch_items: int
    max_batch_bytes: int
    max_image_bytes: int
    max_image_pixels: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_sha256: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., input_size: _Optional[int] = ..., execution_providers: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Union[DetectionMetrics, _Mapping]] = ..., class_metrics: _Optional[_Iterable[_Union[ClassMetrics, _Mapping]]] = ..., metrics_split: _Optional[str] = ..., default_options: _Optional[_Union[DetectOptions, _Mapping]] = ..., max_detections_limit: _Optional[int] = ..., max_batch_items: _Optional[int] = ..., max_batch_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ...) -> None: ...
