from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPUT_KIND_UNSPECIFIED: _ClassVar[InputKind]
    INPUT_KIND_SINGLE_CELL: _ClassVar[InputKind]
    INPUT_KIND_MULTIPLE_CELLS: _ClassVar[InputKind]
    INPUT_KIND_NO_CELL: _ClassVar[InputKind]
    INPUT_KIND_NOT_A_CELL_IMAGE: _ClassVar[InputKind]
    INPUT_KIND_BLANK: _ClassVar[InputKind]
INPUT_KIND_UNSPECIFIED: InputKind
INPUT_KIND_SINGLE_CELL: InputKind
INPUT_KIND_MULTIPLE_CELLS: InputKind
INPUT_KIND_NO_CELL: InputKind
INPUT_KIND_NOT_A_CELL_IMAGE: InputKind
INPUT_KIND_BLANK: InputKind

class Image(_message.Message):
    __slots__ = ("data", "media_type", "image_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    image_id: str
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., image_id: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values", "dimension", "backbone", "weights_hash", "preprocessing", "input_check", "acquisition")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_HASH_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    INPUT_CHECK_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    dimension: int
    backbone: str
    weights_hash: str
    preprocessing: str
    input_check: InputCheck
    acquisition: AcquisitionFingerprint
    def __init__(self, values: _Optional[_Iterable[float]] = ..., dimension: _Optional[int] = ..., backbone: _Optional[str] = ..., weights_hash: _Optional[str] = ..., preprocessing: _Optional[str] = ..., input_check: _Optional[_Union[InputCheck, _Mapping]] = ..., acquisition: _Optional[_Union[AcquisitionFingerprint, _Mapping]] = ...) -> None: ...

class AcquisitionFingerprint(_message.Message):
    __slots__ = ("values", "revision")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    revision: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., revision: _Optional[int] = ...) -> None: ...

class InputCheck(_message.Message):
    __slots__ = ("kind", "reason", "revision", "nuclei", "nucleus_fraction", "cell_fraction", "centre_offset", "stained_fraction")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NUCLEI_FIELD_NUMBER: _ClassVar[int]
    NUCLEUS_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CELL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CENTRE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    STAINED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    kind: InputKind
    reason: str
    revision: int
    nuclei: int
    nucleus_fraction: float
    cell_fraction: float
    centre_offset: float
    stained_fraction: float
    def __init__(self, kind: _Optional[_Union[InputKind, str]] = ..., reason: _Optional[str] = ..., revision: _Optional[int] = ..., nuclei: _Optional[int] = ..., nucleus_fraction: _Optional[float] = ..., cell_fraction: _Optional[float] = ..., centre_offset: _Optional[float] = ..., stained_fraction: _Optional[float] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "reason", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...
