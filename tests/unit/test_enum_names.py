"""Enum values this build does not define (from a peer built with a newer contract) are named, never raised
on, by the classifier's and the gateway's converters."""

from __future__ import annotations

import numpy as np

from gateway.core import _input_reason
from hemascope.enums import enum_name
from hemascope.v1 import classifier_pb2, common_pb2
from services.classifier.converters import embedding_from_proto

UNDEFINED = 103


def test_a_defined_value_keeps_its_name_and_an_undefined_one_is_named_unknown() -> None:
    assert enum_name(common_pb2.InputKind, common_pb2.INPUT_KIND_NO_CELL) == "INPUT_KIND_NO_CELL"
    assert enum_name(common_pb2.InputKind, UNDEFINED) == "UNKNOWN_103"
    assert enum_name(classifier_pb2.ReferReason, UNDEFINED) == "UNKNOWN_103"


def embedding_with_kind(kind: int) -> common_pb2.Embedding:
    embedding = common_pb2.Embedding(values=[0.5, 0.25], dimension=2, backbone="b")
    embedding.input_check.kind = kind  # type: ignore[assignment]
    embedding.input_check.reason = "checked by a newer feature service"
    return embedding


def test_the_classifier_refers_an_embedding_whose_input_kind_it_does_not_know() -> None:
    converted = embedding_from_proto(embedding_with_kind(UNDEFINED))
    assert converted.input_kind == "unknown_103"
    assert converted.not_single_cell
    np.testing.assert_array_equal(converted.values, np.array([0.5, 0.25], dtype=np.float32))
    assert not embedding_from_proto(embedding_with_kind(common_pb2.INPUT_KIND_SINGLE_CELL)).not_single_cell


def test_the_gateway_gives_the_check_s_reason_for_an_input_kind_it_does_not_know() -> None:
    assert _input_reason(embedding_with_kind(UNDEFINED)) == "checked by a newer feature service"
    assert _input_reason(embedding_with_kind(common_pb2.INPUT_KIND_SINGLE_CELL)) == ""
