"""The decode memo (hemascope.imaging.memo) on its own, in the feature service's core and in the gateway's.

Decoding is counted by wrapping the real ``decode_image`` where each core calls it (it still decodes);
a memo hit must give what decoding gave, and only successful decodes are remembered.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY

import gateway.core
import services.feature.core
from gateway.core import GatewayCore
from gateway.domain import AnalyzeOptions
from gateway.settings import GatewaySettings
from hemascope.errors import InvalidArgument, InvalidImage
from hemascope.imaging import content_hash, decode_image
from hemascope.imaging.inputs import ImageInput
from hemascope.imaging.memo import DecodeMemo, SeenImage
from hemascope.v1 import feature_pb2
from services.feature.core import FeatureCore
from tests.feature_helpers import feature_core
from tests.gateway_helpers import closed_port


class Decodes:
    """Counts the calls of the real decode_image made through one module."""

    def __init__(self) -> None:
        self.count = 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        return counted


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# ---------------------------------------------------------------- the memo


def test_memo_remembers_the_last_entries_least_recently_used_out_first() -> None:
    memo = DecodeMemo(2)
    a, b, c = (DecodeMemo.key(data, "") for data in (b"a", b"b", b"c"))
    memo.put(a, SeenImage("ha", 1, 2))
    memo.put(b, SeenImage("hb", 3, 4))
    assert memo.get(a) == SeenImage("ha", 1, 2)  # a is now the most recent
    memo.put(c, SeenImage("hc", 5, 6))
    assert memo.get(b) is None and memo.get(a) is not None and memo.get(c) is not None
    assert len(memo) == 2


def test_memo_key_names_the_bytes_and_the_declared_media_type() -> None:
    assert DecodeMemo.key(b"x", "") == DecodeMemo.key(b"x", "")
    assert DecodeMemo.key(b"x", "") != DecodeMemo.key(b"y", "")
    assert DecodeMemo.key(b"x", "image/png") != DecodeMemo.key(b"x", "image/jpeg")
    assert DecodeMemo.key(b"x", "image/png") != DecodeMemo.key(b"x", "")
    assert DecodeMemo.key(b"\0x", "") != DecodeMemo.key(b"x", "\0")
    assert b"x" * 8 not in DecodeMemo.key(b"x" * 8, "")  # a digest, never the bytes


def test_a_memo_of_no_entries_remembers_nothing() -> None:
    memo = DecodeMemo(0)
    key = DecodeMemo.key(b"a", "")
    memo.put(key, SeenImage("h", 1, 1))
    assert memo.get(key) is None and len(memo) == 0


# ---------------------------------------------------------------- the feature service


@pytest.fixture(scope="module")
def features(model_cache_dir: Path) -> Iterator[dict[str, FeatureCore]]:
    made = {
        "memo": feature_core(model_cache_dir),
        "off": feature_core(model_cache_dir, decode_memo_entries=0),
        "small cache": feature_core(model_cache_dir, memory_cache_entries=1),
    }
    yield made
    for core in made.values():
        core.close()


@pytest.fixture
def feature_decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    decodes = Decodes()
    monkeypatch.setattr(services.feature.core, "decode_image", decodes.wrap(decode_image))
    return decodes


def test_feature_repeat_with_a_cached_embedding_is_not_decoded_and_answers_the_same(
    features: dict[str, FeatureCore], real_images: list[Path], feature_decodes: Decodes
) -> None:
    core = features["memo"]
    image = ImageInput(data=real_images[0].read_bytes(), image_id="a")
    first = core.embed(image)
    assert feature_decodes.count == 1 and not first.cache_hit
    again = core.embed(ImageInput(data=image.data, image_id="b"))
    assert feature_decodes.count == 1 and again.cache_hit
    assert np.array_equal(again.vector, first.vector)
    assert (again.content_hash, again.width, again.height) == (first.content_hash, first.width, first.height)
    assert again.input_check == first.input_check and again.image_id == "b"
    assert np.array_equal(again.acquisition, first.acquisition)  # type: ignore[arg-type]
    core.embed(image, skip_cache=True)  # skipping the cache computes everything again
    assert feature_decodes.count == 2


def test_feature_without_the_memo_decodes_every_repeat(
    features: dict[str, FeatureCore], real_images: list[Path], feature_decodes: Decodes
) -> None:
    core = features["off"]
    image = ImageInput(data=real_images[1].read_bytes())
    assert not core.embed(image).cache_hit
    assert core.embed(image).cache_hit
    assert feature_decodes.count == 2 and len(core.decodes) == 0


def checks_counted() -> float:
    """Input-check verdicts counted so far, every kind."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "hemascope_input_checks"
        for sample in metric.samples
        if sample.name == "hemascope_input_checks_total"
    )


def test_feature_repeat_whose_embedding_left_the_cache_is_decoded_and_embedded_again(
    features: dict[str, FeatureCore], real_images: list[Path], feature_decodes: Decodes
) -> None:
    core = features["small cache"]  # one cached embedding: the second image pushes the first out
    first, second = (ImageInput(data=path.read_bytes()) for path in real_images[2:4])
    vector = core.embed(first).vector
    core.embed(second)
    counted = checks_counted()
    again = core.embed(first)
    assert feature_decodes.count == 3 and not again.cache_hit
    assert checks_counted() == counted + 1  # its verdict counted once, not once per path tried
    np.testing.assert_allclose(again.vector, vector, rtol=0, atol=1e-5)
    counted = checks_counted()
    assert core.embed(first).cache_hit and feature_decodes.count == 3
    assert checks_counted() == counted + 1


def test_feature_blank_image_is_refused_on_every_repeat(
    features: dict[str, FeatureCore], feature_decodes: Decodes
) -> None:
    blank = ImageInput(data=png(np.full((64, 64, 3), 255, dtype=np.uint8)))
    for _ in range(3):
        with pytest.raises(InvalidArgument) as info:
            features["memo"].embed(blank)
        assert info.value.reason == "BLANK_IMAGE"


def test_feature_bad_bytes_are_decoded_and_refused_every_time(
    features: dict[str, FeatureCore], feature_decodes: Decodes
) -> None:
    for _ in range(2):
        with pytest.raises(InvalidImage):
            features["memo"].embed(ImageInput(data=b"not an image"))
    assert feature_decodes.count == 2


# ---------------------------------------------------------------- the gateway


def gateway_core(**overrides: Any) -> GatewayCore:
    settings = GatewaySettings(
        port=0,
        metrics_port=None,
        feature_address=closed_port(),
        classifier_address=closed_port(),
        detector_address=closed_port(),
        explain_address=closed_port(),
        retries=0,
        breaker_failures=1000,
        health_timeout_s=1,
        **overrides,
    )
    core = GatewayCore(settings)
    core.load()
    return core


@pytest.fixture(scope="module")
def gateways() -> Iterator[dict[str, GatewayCore]]:
    made = {"memo": gateway_core(), "off": gateway_core(decode_memo_entries=0)}
    yield made
    for core in made.values():
        core.close()


@pytest.fixture
def gateway_decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    decodes = Decodes()
    monkeypatch.setattr(gateway.core, "decode_image", decodes.wrap(decode_image))
    return decodes


DETECT_ONLY = AnalyzeOptions(skip_classification=True, detect=True)


def test_gateway_names_a_repeated_image_without_decoding_it_again(
    gateways: dict[str, GatewayCore], real_images: list[Path], gateway_decodes: Decodes
) -> None:
    data = real_images[0].read_bytes()
    pixels = decode_image(data).pixels
    reports = [gateways["memo"].analyze(ImageInput(data), DETECT_ONLY, 5.0) for _ in range(3)]
    assert gateway_decodes.count == 1
    for report in reports:
        assert report.content_hash == content_hash(pixels)
        assert (report.width, report.height) == (pixels.shape[1], pixels.shape[0])


def test_gateway_memo_keys_the_declared_media_type_and_remembers_no_refusal(
    gateways: dict[str, GatewayCore], real_images: list[Path], gateway_decodes: Decodes
) -> None:
    data = real_images[1].read_bytes()
    gateways["memo"].analyze(ImageInput(data), DETECT_ONLY, 5.0)
    for _ in range(2):  # the same bytes declared as PNG: decoded (and refused) each time
        with pytest.raises(InvalidImage):
            gateways["memo"].analyze(ImageInput(data, media_type="image/png"), DETECT_ONLY, 5.0)
    assert gateway_decodes.count == 3


def test_gateway_without_the_memo_decodes_every_call(
    gateways: dict[str, GatewayCore], real_images: list[Path], gateway_decodes: Decodes
) -> None:
    data = real_images[2].read_bytes()
    first, second = (gateways["off"].analyze(ImageInput(data), DETECT_ONLY, 5.0) for _ in range(2))
    assert gateway_decodes.count == 2 and first.content_hash == second.content_hash


@pytest.mark.parametrize(("answered", "decoded"), [("a" * 64, 0), ("not a content hash", 1), ("", 1)])
def test_gateway_names_a_classified_image_by_the_embedding_answer_only_when_it_carries_a_content_hash(
    real_images: list[Path],
    gateway_decodes: Decodes,
    monkeypatch: pytest.MonkeyPatch,
    answered: str,
    decoded: int,
) -> None:
    core = gateway_core(decode_memo_entries=0)
    answer = feature_pb2.EmbedResponse(content_hash=answered, width=7, height=9)
    monkeypatch.setattr(GatewayCore, "_embed", staticmethod(lambda *_: answer))
    data = real_images[4].read_bytes()
    try:
        report = core.analyze(ImageInput(data), AnalyzeOptions(), 5.0)
    finally:
        core.close()
    assert gateway_decodes.count == decoded
    if decoded:
        pixels = decode_image(data).pixels
        assert (report.content_hash, report.width, report.height) == (
            content_hash(pixels),
            pixels.shape[1],
            pixels.shape[0],
        )
    else:
        assert (report.content_hash, report.width, report.height) == (answered, 7, 9)
