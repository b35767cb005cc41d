from hemascope.v1 import classifier_pb2 as _classifier_pb2
from hemascope.v1 import common_pb2 as _common_pb2
from hemascope.v1 import detector_pb2 as _detector_pb2
from hemascope.v1 import explain_pb2 as _explain_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeOptions(_message.Message):
    __slots__ = ("models", "skip_classification", "detect", "explain", "explain_model", "explain_class", "explain_method", "detect_confidence", "detect_iou", "malignant_threshold", "explain_overlay")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SKIP_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_CLASS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_METHOD_FIELD_NUMBER: _ClassVar[int]
    DETECT_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DETECT_IOU_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_OVERLAY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    skip_classification: bool
    detect: bool
    explain: bool
    explain_model: str
    explain_class: str
    explain_method: str
    detect_confidence: float
    detect_iou: float
    malignant_threshold: float
    explain_overlay: str
    def __init__(self, models: _Optional[_Iterable[str]] = ..., skip_classification: _Optional[bool] = ..., detect: _Optional[bool] = ..., explain: _Optional[bool] = ..., explain_model: _Optional[str] = ..., explain_class: _Optional[str] = ..., explain_method: _Optional[str] = ..., detect_confidence: _Optional[float] = ..., detect_iou: _Optional[float] = ..., malignant_threshold: _Optional[float] = ..., explain_overlay: _Optional[str] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    options: AnalyzeOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., options: _Optional[_Union[AnalyzeOptions, _Mapping]] = ...) -> None: ...

class PartStatus(_message.Message):
    __slots__ = ("part", "code", "reason", "message", "elapsed_ms")
    PART_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    part: str
    code: int
    reason: str
    message: str
    elapsed_ms: float
    def __init__(self, part: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class EmbeddingInfo(_message.Message):
    __slots__ = ("backbone", "weights_hash", "preprocessing", "cache_hit")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    weights_hash: str
    preprocessing: str
    cache_hit: bool
    def __init__(self, backbone: _Optional[str] = ..., weights_hash: _Optional[str] = ..., preprocessing: _Optional[str] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class CellClassification(_message.Message):
    __slots__ = ("predictions", "bundle_version", "consensus_label", "consensus_probability", "agreement", "malignant_probability", "malignant", "refer", "refer_reasons", "atypical_acquisition", "malignant_unconfirmed")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_FIELD_NUMBER: _ClassVar[int]
    REFER_FIELD_NUMBER: _ClassVar[int]
    REFER_REASONS_FIELD_NUMBER: _ClassVar[int]
    ATYPICAL_ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_UNCONFIRMED_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[_classifier_pb2.ModelPrediction]
    bundle_version: str
    consensus_label: str
    consensus_probability: float
    agreement: float
    malignant_probability: float
    malignant: bool
    refer: bool
    refer_reasons: _containers.RepeatedScalarFieldContainer[str]
    atypical_acquisition: bool
    malignant_unconfirmed: bool
    def __init__(self, predictions: _Optional[_Iterable[_Union[_classifier_pb2.ModelPrediction, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., consensus_label: _Optional[str] = ..., consensus_probability: _Optional[float] = ..., agreement: _Optional[float] = ..., malignant_probability: _Optional[float] = ..., malignant: _Optional[bool] = ..., refer: _Optional[bool] = ..., refer_reasons: _Optional[_Iterable[str]] = ..., atypical_acquisition: _Optional[bool] = ..., malignant_unconfirmed: _Optional[bool] = ...) -> None: ...

class SiteStatus(_message.Message):
    __slots__ = ("status", "atypical_share", "window_images", "window", "flag_share", "expected_share", "images_seen")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATYPICAL_SHARE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_IMAGES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FLAG_SHARE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_SEEN_FIELD_NUMBER: _ClassVar[int]
    status: str
    atypical_share: float
    window_images: int
    window: int
    flag_share: float
    expected_share: float
    images_seen: int
    def __init__(self, status: _Optional[str] = ..., atypical_share: _Optional[float] = ..., window_images: _Optional[int] = ..., window: _Optional[int] = ..., flag_share: _Optional[float] = ..., expected_share: _Optional[float] = ..., images_seen: _Optional[int] = ...) -> None: ...

class CellDetection(_message.Message):
    __slots__ = ("boxes", "model_version")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[_detector_pb2.Box]
    model_version: str
    def __init__(self, boxes: _Optional[_Iterable[_Union[_detector_pb2.Box, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class CellExplanation(_message.Message):
    __slots__ = ("model", "model_version", "method", "class_name", "class_probability", "heat_map", "overlay_png", "region", "overlay")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    HEAT_MAP_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_PNG_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    method: str
    class_name: str
    class_probability: float
    heat_map: _explain_pb2.HeatMap
    overlay_png: bytes
    region: _explain_pb2.Region
    overlay: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., method: _Optional[str] = ..., class_name: _Optional[str] = ..., class_probability: _Optional[float] = ..., heat_map: _Optional[_Union[_explain_pb2.HeatMap, _Mapping]] = ..., overlay_png: _Optional[bytes] = ..., region: _Optional[_Union[_explain_pb2.Region, _Mapping]] = ..., overlay: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("image_id", "content_hash", "width", "height", "embedding", "classification", "detection", "explanation", "parts", "timings", "model_versions", "input_check", "site")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_CHECK_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    content_hash: str
    width: int
    height: int
    embedding: EmbeddingInfo
    classification: CellClassification
    detection: CellDetection
    explanation: CellExplanation
    parts: _containers.RepeatedCompositeFieldContainer[PartStatus]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    model_versions: _containers.ScalarMap[str, str]
    input_check: _common_pb2.InputCheck
    site: SiteStatus
    def __init__(self, image_id: _Optional[str] = ..., content_hash: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., embedding: _Optional[_Union[EmbeddingInfo, _Mapping]] = ..., classification: _Optional[_Union[CellClassification, _Mapping]] = ..., detection: _Optional[_Union[CellDetection, _Mapping]] = ..., explanation: _Optional[_Union[CellExplanation, _Mapping]] = ..., parts: _Optional[_Iterable[_Union[PartStatus, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., input_check: _Optional[_Union[_common_pb2.InputCheck, _Mapping]] = ..., site: _Optional[_Union[SiteStatus, _Mapping]] = ...) -> None: ...

class AnalyzeStreamRequest(_message.Message):
    __slots__ = ("request_id", "request")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    request: AnalyzeRequest
    def __init__(self, request_id: _Optional[str] = ..., request: _Optional[_Union[AnalyzeRequest, _Mapping]] = ...) -> None: ...

class AnalyzeStreamResponse(_message.Message):
    __slots__ = ("request_id", "result", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    result: AnalyzeResponse
    error: _common_pb2.ErrorDetail
    def __init__(self, request_id: _Optional[str] = ..., result: _Optional[_Union[AnalyzeResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassifierModel(_message.Message):
    __slots__ = ("name", "version", "explain_methods")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_METHODS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    explain_methods: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., explain_methods: _Optional[_Iterable[str]] = ...) -> None: ...

class ServiceState(_message.Message):
    __slots__ = ("name", "serving", "circuit_open", "not_running")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_OPEN_FIELD_NUMBER: _ClassVar[int]
    NOT_RUNNING_FIELD_NUMBER: _ClassVar[int]
    name: str
    serving: bool
    circuit_open: bool
    not_running: bool
    def __init__(self, name: _Optional[str] = ..., serving: _Optional[bool] = ..., circuit_open: _Optional[bool] = ..., not_running: _Optional[bool] = ...) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("classes", "malignant_classes", "models", "bundle_version", "embedding", "detector_version", "detector_classes", "max_image_bytes", "max_image_pixels", "max_stream_in_flight", "max_streams_per_caller", "services", "site")
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_CLASSES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CALLER_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedScalarFieldContainer[str]
    malignant_classes: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ClassifierModel]
    bundle_version: str
    embedding: EmbeddingInfo
    detector_version: str
    detector_classes: _containers.RepeatedScalarFieldContainer[str]
    max_image_bytes: int
    max_image_pixels: int
    max_stream_in_flight: int
    max_streams_per_caller: int
    services: _containers.RepeatedCompositeFieldContainer[ServiceState]
    site: SiteStatus
    def __init__(self, classes: _Optional[_Iterable[str]] = ..., malignant_classes: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ClassifierModel, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., embedding: _Optional[_Union[EmbeddingInfo, _Mapping]] = ..., detector_version: _Optional[str] = ..., detector_classes: _Optional[_Iterable[str]] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_stream_in_flight: _Optional[int] = ..., max_streams_per_caller: _Optional[int] = ..., services: _Optional[_Iterable[_Union[ServiceState, _Mapping]]] = ..., site: _Optional[_Union[SiteStatus, _Mapping]] = ...) -> None: ...
