"""The fuzzers' targets accept their own seeds and a few hostile inputs without crashing (the libFuzzer runs
themselves are scripts/fuzz.sh, part of scripts/lint.sh)."""

from __future__ import annotations

import pytest

from fuzz import bundle, converters, decode

HOSTILE = [b"", b"\x00", b"\x01" + b"\xff" * 64, b"\x02" + b"\x00" * 300, b"\x03\x0a\x05hello"]


@pytest.mark.parametrize("module", [decode, bundle, converters], ids=["decode", "bundle", "converters"])
def test_targets_take_their_seeds_and_hostile_bytes(module: object) -> None:
    target = module.target  # type: ignore[attr-defined]
    seeds = list(module.seeds())  # type: ignore[attr-defined]
    assert seeds
    for data in [*seeds, *HOSTILE]:
        target(data)


def test_converter_errors_keep_echoed_strings_short() -> None:
    from hemascope.v1 import analysis_pb2

    request = analysis_pb2.AnalyzeRequest()
    request.image.data = b"x"
    request.options.explain = True
    request.options.explain_class = "y" * 100_000
    converters.target(b"\x00" + request.SerializeToString())  # asserts the detail's size itself
