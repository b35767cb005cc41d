"""Helpers for asserting on gRPC errors in tests."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpc_status import rpc_status

from hemascope.v1 import common_pb2


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The RpcError ``call`` raises (fails the test if it raises none)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorDetail reason packed into the call's google.rpc.Status; checks its code matches."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status details"
    detail = common_pb2.ErrorDetail()
    assert status.details[0].Unpack(detail)
    assert detail.code == error.code().value[0]
    return detail.reason
