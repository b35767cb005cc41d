"""The feature core's preprocessing pool: images are decoded, checked and preprocessed on the pool's threads
(ahead of the model, off the RPC threads) with the same results as on the caller's thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hemascope.cache import MemoryCache
from hemascope.errors import DeadlineExceeded, HemascopeError, InvalidArgument, Unavailable
from hemascope.imaging import cellseg, inputcheck
from hemascope.imaging.inputs import ImageInput
from services.feature import core as core_module
from services.feature.core import EmbedResult, FeatureCore
from services.feature.settings import FeatureSettings
from tests.conftest import encode

PREFIX = "feature-prep-"


def _core(model_cache_dir: Path, threads: int) -> FeatureCore:
    settings = FeatureSettings(
        port=0, metrics_port=None, model_cache_dir=model_cache_dir, preprocess_threads=threads
    )
    core = FeatureCore(settings, cache=MemoryCache(max_entries=100))
    core.load()
    return core


@pytest.fixture(scope="module")
def cores(model_cache_dir: Path) -> Iterator[tuple[FeatureCore, FeatureCore]]:
    inline, pooled = _core(model_cache_dir, 0), _core(model_cache_dir, 2)
    yield inline, pooled
    inline.close()
    pooled.close()


def _inputs(real_images: list[Path]) -> list[ImageInput]:
    images = [ImageInput(path.read_bytes(), "image/jpeg", path.name) for path in real_images[:4]]
    blank = ImageInput(encode(np.full((64, 64, 3), 200, np.uint8)), "image/png", "blank")
    broken = ImageInput(b"not an image", "", "broken")
    return [images[0], broken, images[1], blank, images[2], images[3]]


def _prep_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.name.startswith(PREFIX)}


def _same(a: EmbedResult | HemascopeError, b: EmbedResult | HemascopeError, *, exact: bool) -> None:
    if isinstance(a, HemascopeError) or isinstance(b, HemascopeError):
        assert type(a) is type(b) and getattr(a, "reason", None) == getattr(b, "reason", None)
        return
    assert (a.content_hash, a.width, a.height, a.image_id) == (b.content_hash, b.width, b.height, b.image_id)
    assert a.input_check == b.input_check
    if exact:
        assert np.array_equal(a.vector, b.vector)
    else:  # micro-batches of other sizes: the model's float sums in another order
        np.testing.assert_allclose(a.vector, b.vector, rtol=1e-4, atol=1e-5)


def test_one_image_at_a_time_gives_identical_embeddings(
    cores: tuple[FeatureCore, FeatureCore], real_images: list[Path]
) -> None:
    inline, pooled = cores
    for image in _inputs(real_images):
        outcomes = []
        for core in (inline, pooled):
            try:
                outcomes.append(core.embed(image, skip_cache=True, timeout=60))
            except HemascopeError as exc:
                outcomes.append(exc)
        _same(outcomes[0], outcomes[1], exact=True)


def test_a_batch_is_prepared_on_the_pool_with_the_same_results(
    cores: tuple[FeatureCore, FeatureCore], real_images: list[Path]
) -> None:
    inline, pooled = cores
    images = _inputs(real_images)
    expected = inline.embed_many(images, skip_cache=True, timeout=60)
    got = pooled.embed_many(images, skip_cache=True, timeout=60)
    assert [type(item) for item in got] == [type(item) for item in expected]
    assert isinstance(got[1], InvalidArgument) and isinstance(got[3], InvalidArgument)
    for a, b in zip(expected, got, strict=True):
        _same(a, b, exact=False)
    assert any(name.startswith(PREFIX + pooled.spec.name) for name in _prep_threads())


def test_the_inline_core_prepares_on_the_callers_thread(
    model_cache_dir: Path, real_images: list[Path]
) -> None:
    before = _prep_threads()
    core = _core(model_cache_dir, 0)
    try:
        core.embed_many(_inputs(real_images)[:3], skip_cache=True, timeout=60)
        assert _prep_threads() == before
    finally:
        core.close()


def test_a_passed_deadline_is_deadline_exceeded_and_a_closed_core_unavailable(
    model_cache_dir: Path, real_images: list[Path]
) -> None:
    core = _core(model_cache_dir, 2)
    image = _inputs(real_images)[0]
    with pytest.raises(DeadlineExceeded):
        core.embed(image, skip_cache=True, timeout=0.0)
    assert isinstance(core.embed_many([image], skip_cache=True, timeout=0.0)[0], DeadlineExceeded)
    core.close()
    with pytest.raises(Unavailable):
        core.embed(image, skip_cache=True, timeout=10)


def test_a_fresh_image_is_brought_to_working_resolution_once(
    cores: tuple[FeatureCore, FeatureCore], real_images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The input check and the cell crop share one working image instead of resampling the image twice."""
    inline, _ = cores
    assert inline.settings.input_check and inline.info.preprocessing.cell_crop
    made: list[tuple[int, ...]] = []
    real = cellseg.working_image

    def counted(pixels: np.ndarray) -> cellseg.Working:
        made.append(pixels.shape)
        return real(pixels)

    for module in (cellseg, inputcheck, core_module):
        monkeypatch.setattr(module, "working_image", counted)
    fresh = real_images[-1]  # no other test of this module embeds it: its inspection is not remembered
    result = inline.embed(ImageInput(fresh.read_bytes(), "image/jpeg", fresh.name), skip_cache=True)
    assert isinstance(result, EmbedResult) and result.input_check is not None
    assert len(made) == 1
