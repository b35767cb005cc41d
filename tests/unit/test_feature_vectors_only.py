"""Embedding for the vectors only (``FeatureCore.embed_many(inspect=False)``, what training uses): the same
vectors as a served embedding, no input check nor fingerprint computed, a blank image still refused."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import services.feature.core
from hemascope.errors import InvalidArgument
from hemascope.imaging.inputcheck import InputKind, blank_reason, check_input
from hemascope.imaging.inputs import ImageInput
from hemascope.training.embed import EmbeddingFailed, embed_paths
from services.feature.core import EmbedResult, FeatureCore
from tests.feature_helpers import feature_core


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _blank() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.clip(240 + rng.integers(-3, 4, (96, 96, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cores(model_cache_dir: Path) -> Iterator[dict[str, FeatureCore]]:
    made = {
        "on": feature_core(model_cache_dir, memory_cache_entries=0),
        "check off": feature_core(model_cache_dir, memory_cache_entries=0, input_check=False),
    }
    yield made
    for core in made.values():
        core.close()


def _results(outcomes: list[EmbedResult | Exception]) -> list[EmbedResult]:
    assert all(isinstance(o, EmbedResult) for o in outcomes), outcomes
    return [o for o in outcomes if isinstance(o, EmbedResult)]


def test_vectors_only_are_the_served_vectors_without_the_inspection(
    cores: dict[str, FeatureCore], real_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = [ImageInput(path.read_bytes()) for path in real_images[:4]]
    served = _results(list(cores["on"].embed_many(images)))
    calls: list[str] = []

    def counted(name: str) -> Callable[..., object]:
        original = getattr(services.feature.core, name)

        def call(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return original(*args, **kwargs)

        return call

    for name in ("check_input", "fingerprint"):
        monkeypatch.setattr(services.feature.core, name, counted(name))
    bare = _results(list(cores["on"].embed_many(images, inspect=False)))
    assert calls == []  # neither the check nor the fingerprint ran
    for a, b in zip(served, bare, strict=True):
        assert np.array_equal(a.vector, b.vector)
        assert (a.content_hash, a.width, a.height) == (b.content_hash, b.width, b.height)
        assert a.input_check is not None and a.acquisition is not None
        assert b.input_check is None and b.acquisition is None


def test_vectors_only_still_refuses_a_blank_image_as_the_check_would(cores: dict[str, FeatureCore]) -> None:
    blank = ImageInput(_png(_blank()))
    (outcome,) = cores["on"].embed_many([blank], inspect=False)
    assert isinstance(outcome, InvalidArgument) and outcome.reason == "BLANK_IMAGE"
    (served,) = cores["on"].embed_many([blank])
    assert isinstance(served, InvalidArgument) and str(served) == str(outcome)
    # With the input check switched off nothing is refused, inspected or not.
    for inspect in (True, False):
        (result,) = cores["check off"].embed_many([blank], inspect=inspect)
        assert isinstance(result, EmbedResult)


def test_blank_reason_agrees_with_the_input_check(real_images: list[Path]) -> None:
    blank = _blank()
    check = check_input(blank)
    assert check.kind is InputKind.BLANK and blank_reason(blank) == check.reason
    for path in real_images[:3]:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert check_input(pixels).kind is not InputKind.BLANK and blank_reason(pixels) is None
    edge = np.full((64, 64, 3), 200, np.uint8)
    edge[:, 32:] = 213  # a 13-level step: above the 12-level threshold, so not blank
    assert blank_reason(edge) is None and check_input(edge).kind is not InputKind.BLANK


def test_training_embeds_vectors_only_and_refuses_a_blank_image(
    tmp_path: Path, real_images: list[Path], model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_MODEL_CACHE_DIR", str(model_cache_dir))

    def not_here(*_: object) -> None:
        raise AssertionError("training embedding ran the input check or the fingerprint")

    monkeypatch.setattr(services.feature.core, "check_input", not_here)
    monkeypatch.setattr(services.feature.core, "fingerprint", not_here)
    blank = tmp_path / "blank.png"
    blank.write_bytes(_png(_blank()))
    with pytest.raises(EmbeddingFailed, match="blank"):
        embed_paths([real_images[0], blank], progress=False)
    embedded = embed_paths(real_images[:2], progress=False)
    assert embedded.vectors.shape[0] == 2
