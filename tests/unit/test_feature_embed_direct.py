"""FeatureCore.embed_direct (a whole batch in one session run, as the batch pipeline's workers call it)
answers exactly what embed (the service's micro-batched path) answers, with each bad image its own error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hemascope.errors import HemascopeError
from hemascope.imaging.inputs import ImageInput
from services.feature.core import EmbedResult, FeatureCore
from services.feature.settings import FeatureSettings


@pytest.fixture(scope="module")
def core(model_cache_dir: Path) -> Iterator[FeatureCore]:
    settings = FeatureSettings(
        port=0, metrics_port=None, log_json=False, model_cache_dir=model_cache_dir, intra_op_threads=1
    )
    feature = FeatureCore(settings)
    feature.load()
    yield feature
    feature.close()


def test_direct_batch_equals_the_service_path_and_keeps_errors_in_place(
    core: FeatureCore, real_images: list[Path]
) -> None:
    images = [ImageInput(data=p.read_bytes()) for p in real_images[:4]]
    batch = [images[0], ImageInput(data=b"not an image"), *images[1:]]
    direct = core.embed_direct(batch)
    assert isinstance(direct[1], HemascopeError) and direct[1].reason == "UNSUPPORTED_FORMAT"
    answered = [r for r in direct if isinstance(r, EmbedResult)]
    assert len(answered) == 4
    for image, result in zip(images, answered, strict=True):
        service = core.embed(image, skip_cache=True)
        assert result.content_hash == service.content_hash
        assert result.input_check == service.input_check
        assert not result.cache_hit
        np.testing.assert_allclose(result.vector, service.vector, rtol=0, atol=1e-5)


def test_direct_batch_of_only_bad_images_runs_no_session(core: FeatureCore) -> None:
    outcomes = core.embed_direct([ImageInput(data=b""), ImageInput(data=b"\x89PNG\r\n\x1a\n")])
    assert all(isinstance(o, HemascopeError) for o in outcomes)
    assert core.embed_direct([]) == []
