from hemascope.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReferReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFER_REASON_UNSPECIFIED: _ClassVar[ReferReason]
    REFER_REASON_LOW_CONFIDENCE: _ClassVar[ReferReason]
    REFER_REASON_OUT_OF_DISTRIBUTION: _ClassVar[ReferReason]
    REFER_REASON_LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION: _ClassVar[ReferReason]
    REFER_REASON_NOT_SINGLE_CELL: _ClassVar[ReferReason]
    REFER_REASON_ATYPICAL_ACQUISITION: _ClassVar[ReferReason]
REFER_REASON_UNSPECIFIED: ReferReason
REFER_REASON_LOW_CONFIDENCE: ReferReason
REFER_REASON_OUT_OF_DISTRIBUTION: ReferReason
REFER_REASON_LOW_CONFIDENCE_AND_OUT_OF_DISTRIBUTION: ReferReason
REFER_REASON_NOT_SINGLE_CELL: ReferReason
REFER_REASON_ATYPICAL_ACQUISITION: ReferReason

class ClassifyRequest(_message.Message):
    __slots__ = ("embeddings", "models", "site_profile")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SITE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Embedding]
    models: _containers.RepeatedScalarFieldContainer[str]
    site_profile: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_common_pb2.Embedding, _Mapping]]] = ..., models: _Optional[_Iterable[str]] = ..., site_profile: _Optional[str] = ...) -> None: ...

class ClassProbability(_message.Message):
    __slots__ = ("class_name", "probability")
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    class_name: str
    probability: float
    def __init__(self, class_name: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ModelPrediction(_message.Message):
    __slots__ = ("model", "model_version", "probabilities", "label", "confidence", "malignant_probability", "abstain", "ood_score", "out_of_distribution", "refer_reason", "acquisition_score", "atypical_acquisition", "acquisition_checked")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    REFER_REASON_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_SCORE_FIELD_NUMBER: _ClassVar[int]
    ATYPICAL_ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_CHECKED_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    probabilities: _containers.RepeatedCompositeFieldContainer[ClassProbability]
    label: str
    confidence: float
    malignant_probability: float
    abstain: bool
    ood_score: float
    out_of_distribution: bool
    refer_reason: ReferReason
    acquisition_score: float
    atypical_acquisition: bool
    acquisition_checked: bool
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., probabilities: _Optional[_Iterable[_Union[ClassProbability, _Mapping]]] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., malignant_probability: _Optional[float] = ..., abstain: _Optional[bool] = ..., ood_score: _Optional[float] = ..., out_of_distribution: _Optional[bool] = ..., refer_reason: _Optional[_Union[ReferReason, str]] = ..., acquisition_score: _Optional[float] = ..., atypical_acquisition: _Optional[bool] = ..., acquisition_checked: _Optional[bool] = ...) -> None: ...

class ClassifyResult(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[ModelPrediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[ModelPrediction, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "bundle_version", "site_profile")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassifyResult]
    bundle_version: str
    site_profile: str
    def __init__(self, results: _Optional[_Iterable[_Union[ClassifyResult, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., site_profile: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "kind", "metrics", "abstain_threshold", "temperature", "ood_threshold")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ABSTAIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    OOD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    kind: str
    metrics: _containers.ScalarMap[str, float]
    abstain_threshold: float
    temperature: float
    ood_threshold: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., abstain_threshold: _Optional[float] = ..., temperature: _Optional[float] = ..., ood_threshold: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("bundle_version", "backbone", "weights_hash", "dimension", "preprocessing", "classes", "malignant_classes", "models", "data_fingerprint", "created", "max_embeddings", "last_reload_error", "site_profiles", "acquisition_revision", "expected_atypical_rate")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    MALIGNANT_CLASSES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    MAX_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    LAST_RELOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    SITE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_REVISION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ATYPICAL_RATE_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    backbone: str
    weights_hash: str
    dimension: int
    preprocessing: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    malignant_classes: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    data_fingerprint: str
    created: str
    max_embeddings: int
    last_reload_error: str
    site_profiles: _containers.RepeatedScalarFieldContainer[str]
    acquisition_revision: int
    expected_atypical_rate: float
    def __init__(self, bundle_version: _Optional[str] = ..., backbone: _Optional[str] = ..., weights_hash: _Optional[str] = ..., dimension: _Optional[int] = ..., preprocessing: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., malignant_classes: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., data_fingerprint: _Optional[str] = ..., created: _Optional[str] = ..., max_embeddings: _Optional[int] = ..., last_reload_error: _Optional[str] = ..., site_profiles: _Optional[_Iterable[str]] = ..., acquisition_revision: _Optional[int] = ..., expected_atypical_rate: _Optional[float] = ...) -> None: ...

class ReloadBundleRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ReloadBundleResponse(_message.Message):
    __slots__ = ("bundle_version", "previous_version", "model_count")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    previous_version: str
    model_count: int
    def __init__(self, bundle_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., model_count: _Optional[int] = ...) -> None: ...
