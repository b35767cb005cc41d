from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PromoteBundleRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class PromoteBundleResponse(_message.Message):
    __slots__ = ("bundle_version", "previous_version", "model_count")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    previous_version: str
    model_count: int
    def __init__(self, bundle_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., model_count: _Optional[int] = ...) -> None: ...
