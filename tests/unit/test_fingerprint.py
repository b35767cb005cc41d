"""The acquisition fingerprint measures how an image was taken, on real images of the three laboratories."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from hemascope.imaging.fingerprint import NAMES, RESOLUTION, SIZE, fingerprint


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _index(name: str) -> int:
    return NAMES.index(name)


@pytest.fixture(scope="module")
def barcelona(data_dir: Path) -> list[np.ndarray]:
    return [
        _load(p) for p in sorted((data_dir / "bloodcells-5class" / "train" / "monocyte").glob("*.jpg"))[:8]
    ]


@pytest.fixture(scope="module")
def munich(data_dir: Path) -> list[np.ndarray]:
    return [
        _load(p) for p in sorted((data_dir / "bloodcells-5class" / "train" / "myeloblast").glob("*.jpg"))[:8]
    ]


def test_shape_names_and_determinism(barcelona: list[np.ndarray]) -> None:
    first = fingerprint(barcelona[0])
    assert first.shape == (SIZE,) == (len(NAMES),) and len(RESOLUTION) == SIZE
    assert first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, fingerprint(barcelona[0].copy()))


def test_refuses_what_is_not_rgb() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        fingerprint(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        fingerprint(np.zeros((10, 10, 3), dtype=np.float32))


def test_pixel_size_focus_and_compression_move_their_entries(barcelona: list[np.ndarray]) -> None:
    image = barcelona[0]
    base = fingerprint(image)
    small = np.asarray(Image.fromarray(image).resize((180, 182), Image.Resampling.LANCZOS))
    assert fingerprint(small)[_index("log_width")] == pytest.approx(np.log(180))
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(2)))
    assert fingerprint(blurred)[_index("log_laplacian_energy")] < base[_index("log_laplacian_energy")] - 1
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=15)
    recompressed = np.asarray(Image.open(buffer).convert("RGB"))
    assert fingerprint(recompressed)[_index("jpeg_blockiness")] > base[_index("jpeg_blockiness")] + 0.2


def test_the_two_scanners_differ_in_white_balance_and_size(
    barcelona: list[np.ndarray], munich: list[np.ndarray]
) -> None:
    b = np.median([fingerprint(p) for p in barcelona], axis=0)
    m = np.median([fingerprint(p) for p in munich], axis=0)
    assert b[_index("log_width")] == pytest.approx(np.log(360))
    assert m[_index("log_width")] == pytest.approx(np.log(400))
    # Munich's background is bluer (lower CIELAB b*) than Barcelona's beige one.
    assert m[_index("background_b")] < b[_index("background_b")] - 5
