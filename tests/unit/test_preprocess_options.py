"""The named preprocessing options: shapes, versions, lookups, fallbacks and that each does what it says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hemascope.data import shared_data_dir
from hemascope.errors import NotFound
from hemascope.imaging.montage import preprocessing_montage
from hemascope.imaging.preprocess import (
    DEFAULT_PREPROCESSING,
    PREPROCESSING,
    STUDY_PREPROCESSING,
    Preprocessing,
    fallback_counts,
    get_preprocessing,
    preprocessing_for_version,
)

DATA = shared_data_dir()
SOURCES = ["bloodcells-5class/train/monocyte", "bloodcells-5class/train/seg_neutrophil"]


def _first(relative: str) -> np.ndarray:
    """The second image (the first monocyte is the stain reference, which Reinhard leaves nearly as is)."""
    paths = sorted((DATA / relative).glob("*.jpg"))
    if len(paths) < 2:
        pytest.skip(f"no data at {DATA / relative}")
    with Image.open(paths[1]) as image:
        return np.asarray(image.convert("RGB"))


def test_plain_is_the_study_recipe_unchanged() -> None:
    plain = PREPROCESSING["plain"]
    assert plain is STUDY_PREPROCESSING
    # the default is the robustness study's choice (reports/robustness/study.md), a registered option
    assert DEFAULT_PREPROCESSING in PREPROCESSING and DEFAULT_PREPROCESSING == "cellcrop-hematoxylin"
    assert plain.version == "rgb-224-bilinear-aa-imagenet.v1" == Preprocessing().version
    pixels = np.random.default_rng(0).integers(0, 256, (363, 360, 3), dtype=np.uint8)
    assert np.array_equal(plain.prepare(pixels), plain.resize(pixels))


def test_versions_are_unique_and_name_the_option() -> None:
    versions = [option.version for option in PREPROCESSING.values()]
    assert len(set(versions)) == len(versions)
    for name, option in PREPROCESSING.items():
        assert option.name == name
        if name != "plain":
            assert option.version.startswith(f"{name}-224-")
        assert preprocessing_for_version(option.version) is option
    sized = dataclasses.replace(PREPROCESSING["cellcrop"], size=96)
    assert sized.version != PREPROCESSING["cellcrop"].version


def test_lookups_fail_with_not_found() -> None:
    assert get_preprocessing("cellcrop-macenko").stain == "macenko"
    with pytest.raises(NotFound) as caught:
        get_preprocessing("sepia")
    assert caught.value.reason == "UNKNOWN_PREPROCESSING"
    with pytest.raises(NotFound):
        preprocessing_for_version("rgb-224-bilinear-aa-imagenet.v2")


@pytest.mark.parametrize("name", ["cellcrop-cellcrop", "gray-macenko", "", "plain-gray", "macenko-reinhard"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="preprocessing name"):
        Preprocessing(name=name)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(PREPROCESSING))
def test_every_option_gives_size_square_uint8_and_differs_from_plain(name: str, source: str) -> None:
    pixels = _first(source)
    option = PREPROCESSING[name]
    report = option.prepare_report(pixels)
    out = report.pixels
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert report.fallbacks == ()
    assert np.array_equal(out, option.prepare(pixels))  # deterministic
    plain = STUDY_PREPROCESSING.prepare(pixels)
    if name == "plain":
        assert np.array_equal(out, plain)
        return
    assert np.abs(out.astype(int) - plain.astype(int)).mean() > 2  # Reinhard on a Barcelona image: ~4
    if option.channels:
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    if option.cell_crop:
        corners = np.concatenate([out[:8, :8], out[:8, -8:], out[-8:, :8], out[-8:, -8:]]).reshape(-1, 3)
        assert len(np.unique(corners, axis=0)) == 1  # the neutral background
    assert option.prepare(np.ascontiguousarray(pixels[:, ::-1])).shape == (224, 224, 3)


def test_cellcrop_enlarges_the_small_barcelona_cell() -> None:
    pixels = _first("bloodcells-5class/train/basophil")
    crop = PREPROCESSING["cellcrop"].prepare(pixels)
    plain = STUDY_PREPROCESSING.prepare(pixels)
    # The dark purple area (the nucleus) takes a much larger share of the crop than of the image.
    share = [float((img.astype(int)[..., 1] < 90).mean()) for img in (plain, crop)]
    assert share[1] > 2.5 * share[0], share


@pytest.mark.parametrize("name", [n for n in PREPROCESSING if n != "plain"])
def test_odd_images_never_crash_and_fallbacks_are_counted(name: str) -> None:
    option = PREPROCESSING[name]
    before = fallback_counts()
    for pixels in (
        np.full((50, 60, 3), 240, np.uint8),
        np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8),
        np.zeros((1, 1, 3), np.uint8),
    ):
        report = option.prepare_report(pixels)
        assert report.pixels.shape == (224, 224, 3) and report.pixels.dtype == np.uint8
    after = fallback_counts()
    taken = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    if option.cell_crop or option.stain:
        assert taken and all(k.startswith(f"{name}:") for k in taken), taken
    else:
        assert not taken


def test_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        PREPROCESSING["cellcrop"].prepare(np.zeros((10, 10), np.uint8))


def test_montage_has_a_tile_per_image_and_option(tmp_path: Path) -> None:
    paths = [sorted((DATA / s).glob("*.jpg"))[0] for s in SOURCES if (DATA / s).is_dir()]
    if len(paths) < 2:
        pytest.skip("no data")
    out = preprocessing_montage(paths, ["plain", "cellcrop"], tmp_path / "m" / "montage.png", tile=64)
    with Image.open(out) as image:
        width, height = image.size
    assert width > 2 * 64 and height >= 2 * 64
    with pytest.raises(NotFound):
        preprocessing_montage(paths, ["sepia"], tmp_path / "x.png")


@pytest.mark.parametrize("relative", SOURCES)
def test_cropping_options_say_where_the_crop_lies_on_the_original(relative: str) -> None:
    pixels = _first(relative)
    assert get_preprocessing("plain").prepare_report(pixels).box is None
    assert get_preprocessing("macenko").prepare_report(pixels).box is None
    prepared = get_preprocessing("cellcrop").prepare_report(pixels)
    assert prepared.box is not None
    x0, y0, x1, y1 = prepared.box
    h, w = pixels.shape[:2]
    assert x1 - x0 == pytest.approx(y1 - y0)  # square, as the crop is
    assert 0 < (x0 + x1) / 2 < w and 0 < (y0 + y1) / 2 < h
    # the crop of the original at that box, resized, is what the backbone sees inside the cell
    # (Image.crop pads outside the image; the centre compared here is the cell, inside it)
    crop = Image.fromarray(pixels).crop((round(x0), round(y0), round(x1), round(y1)))
    again = np.asarray(crop.resize((224, 224), Image.Resampling.BILINEAR))
    centre = slice(100, 124)
    diff = np.abs(again[centre, centre].astype(int) - prepared.pixels[centre, centre].astype(int))
    assert diff.mean() < 12
