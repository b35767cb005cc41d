"""The client's error mapping and request building (pure: no server)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

from hemascope.client import (
    DeadlineExceeded,
    HemascopeClientError,
    InternalError,
    InvalidArgument,
    InvalidImage,
    ResourceExhausted,
    ServiceUnavailable,
    Unauthenticated,
)
from hemascope.client.common import analyze_options, analyze_request, call_metadata, read_image
from hemascope.client.errors import _detail_from_metadata, error_class, from_detail
from hemascope.v1 import analysis_pb2, common_pb2


def status_trailer(detail: common_pb2.ErrorDetail) -> tuple[tuple[str, bytes], ...]:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = status_pb2.Status(code=detail.code, message=detail.message, details=[packed])
    return (("other", b"x"), ("grpc-status-details-bin", status.SerializeToString()))


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_PIXELS", InvalidImage),
        (grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_IMAGE", InvalidImage),
        (grpc.StatusCode.INVALID_ARGUMENT, "BAD_OPTION", InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, "", Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, "", ServiceUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", ResourceExhausted),
        (grpc.StatusCode.INTERNAL, "", InternalError),
        (grpc.StatusCode.UNKNOWN, "", InternalError),
        (grpc.StatusCode.ABORTED, "", HemascopeClientError),
    ],
)
def test_error_class_by_code_and_reason(
    code: grpc.StatusCode, reason: str, expected: type[HemascopeClientError]
) -> None:
    assert error_class(code, reason) is expected


def test_invalid_image_is_an_invalid_argument() -> None:
    assert issubclass(InvalidImage, InvalidArgument)
    assert issubclass(ServiceUnavailable, HemascopeClientError)


def test_detail_is_read_from_the_status_trailer() -> None:
    sent = common_pb2.ErrorDetail(code=3, reason="CORRUPT_IMAGE", message="truncated", field="image.data")
    detail = _detail_from_metadata(status_trailer(sent))
    assert detail == sent
    assert _detail_from_metadata((("grpc-status-details-bin", b"\xff\x00not a status"),)) is None
    assert _detail_from_metadata(None) is None


def test_from_detail_builds_the_matching_exception() -> None:
    error = from_detail(common_pb2.ErrorDetail(code=3, reason="EMPTY_IMAGE", message="empty", field="f"))
    assert isinstance(error, InvalidImage)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.reason, error.message, error.field) == ("EMPTY_IMAGE", "empty", "f")
    assert str(error) == "INVALID_ARGUMENT: empty (field f)"
    unavailable = from_detail(common_pb2.ErrorDetail(code=14, message="down"))
    assert isinstance(unavailable, ServiceUnavailable)
    assert unavailable.reason == "UNAVAILABLE"


def test_analyze_options_from_keywords_override_the_base() -> None:
    base = analysis_pb2.AnalyzeOptions(models=["svm"], detect=True)
    options = analyze_options(base, explain=True, models=["xgboost", "kmeans"])
    assert list(options.models) == ["xgboost", "kmeans"]
    assert options.detect
    assert options.explain
    assert list(base.models) == ["svm"]  # the base is not changed
    with pytest.raises(TypeError, match="detection"):
        analyze_options(None, detection=True)


def test_requests_from_paths_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "cell.jpg"
    path.write_bytes(b"\xff\xd8data")
    assert read_image(path) == (b"\xff\xd8data", "cell.jpg")
    assert read_image(str(path)) == (b"\xff\xd8data", "cell.jpg")
    assert read_image(bytearray(b"ab")) == (b"ab", "")
    request = analyze_request(path, None, None, "image/jpeg", {"detect": True})
    assert request.image.image_id == "cell.jpg"
    assert request.image.media_type == "image/jpeg"
    assert request.options.detect
    assert analyze_request(b"x", None, "id-7", "", {}).image.image_id == "id-7"
    assert call_metadata("k") == (("x-api-key", "k"),)
    assert call_metadata(None) is None


def test_an_error_made_without_a_code_carries_its_class_code() -> None:
    error = DeadlineExceeded("the gateway at 127.0.0.1:1 was not SERVING after 3 s")
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert str(error).startswith("DEADLINE_EXCEEDED: ")
    assert ServiceUnavailable("down").code is grpc.StatusCode.UNAVAILABLE
