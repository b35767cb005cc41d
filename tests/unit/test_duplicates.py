"""Duplicate finding (exact, flipped, rotated) and the dataset audit on tiny synthetic images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from hemascope.commands.audit import run_audit
from hemascope.training.audit import audit_dataset
from hemascope.training.duplicates import DEFAULT_THRESHOLD, dihedral_phashes, find_duplicates


def _field(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth random RGB picture (width x height ``size``), distinct for each seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def _save(image: Image.Image, path: Path, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality)
    return path


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    base = _field(0)
    paths = {
        "a": _save(base, tmp_path / "a.png"),
        "flipped": _save(base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), tmp_path / "flipped.png"),
        "rotated": _save(base.transpose(Image.Transpose.ROTATE_90), tmp_path / "rotated.jpg", quality=90),
    }
    paths["copy"] = tmp_path / "copy.png"
    shutil.copyfile(paths["a"], paths["copy"])
    for seed in range(1, 13):
        paths[f"other{seed}"] = _save(_field(seed), tmp_path / f"other{seed}.png")
    return paths


def test_exact_flipped_and_rotated_copies_are_found(images: dict[str, Path]) -> None:
    names = list(images)
    report = find_duplicates(list(images.values()))
    idx = {name: i for i, name in enumerate(names)}
    assert report.exact_groups == [[idx["a"], idx["copy"]]]
    pairs = {(i, j): d for i, j, d in report.near_pairs}
    trio = [idx["a"], idx["flipped"], idx["rotated"]]
    assert set(pairs) == {(trio[0], trio[1]), (trio[0], trio[2]), (trio[1], trio[2])}
    assert all(d <= DEFAULT_THRESHOLD for d in pairs.values())
    group = report.group_of[idx["a"]]
    assert [n for n in names if report.group_of[idx[n]] == group] == ["a", "flipped", "rotated", "copy"]
    assert report.merged_groups == 1
    assert report.largest_component == 4
    assert report.components() == [sorted(idx[n] for n in ("a", "flipped", "rotated", "copy"))]


def test_distinct_random_images_are_not_merged(images: dict[str, Path]) -> None:
    others = [p for name, p in images.items() if name.startswith("other")]
    report = find_duplicates(others)
    assert report.exact_groups == []
    assert report.near_pairs == []
    assert len(set(report.group_of.tolist())) == len(others)
    assert report.merged_groups == 0
    assert int(report.distance_counts.sum()) == len(others) * (len(others) - 1) // 2
    assert int(report.distance_counts[: 2 * DEFAULT_THRESHOLD + 1].sum()) == 0  # a wide margin


def test_group_of_merges_exact_and_near_transitively(tmp_path: Path) -> None:
    """C is byte-identical to B, B a flipped copy of A: A and C end up in one group, D stays alone."""
    a = _save(_field(5), tmp_path / "a.png")
    b = _save(_field(5).transpose(Image.Transpose.FLIP_TOP_BOTTOM), tmp_path / "b.png")
    c = tmp_path / "c.png"
    shutil.copyfile(b, c)
    d = _save(_field(6), tmp_path / "d.png")
    report = find_duplicates([a, d, b, c])
    assert report.exact_groups == [[2, 3]]
    assert [(i, j) for i, j, _ in report.near_pairs] == [(0, 2)]  # B stands for its exact group
    assert report.group_of[0] == report.group_of[2] == report.group_of[3] != report.group_of[1]


def test_threshold_and_unreadable_files(tmp_path: Path) -> None:
    a = _save(_field(7), tmp_path / "a.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    twin = tmp_path / "twin.jpg"
    shutil.copyfile(broken, twin)
    near = _save(_field(7).transpose(Image.Transpose.ROTATE_180), tmp_path / "near.jpg", quality=40)
    report = find_duplicates([a, broken, twin, near], threshold=0)
    assert report.unreadable == [1, 2]
    assert report.exact_groups == [[1, 2]]  # still found from the bytes
    assert report.threshold == 0
    assert all(d == 0 for _, _, d in report.near_pairs)


def test_dihedral_hashes_match_phash_of_transformed_image() -> None:
    image = _field(11, (123, 77))
    hashes = dihedral_phashes(np.asarray(image))
    assert hashes.dtype == np.uint64
    assert hashes.shape == (8,)
    for transform in Image.Transpose:
        full = imagehash.phash(image.transpose(transform))
        packed = np.packbits(full.hash.ravel().astype(np.uint8)).view(">u8")[0]
        assert int(np.bitwise_count(np.uint64(packed) ^ hashes).min()) <= 2


def _tiny_dataset(root: Path) -> None:
    """Two classes whose image sizes differ (a planted source shortcut) and a copy across splits."""
    for split, seeds in (("train", range(0, 8)), ("val", range(8, 12))):
        for seed in seeds:
            _save(_field(100 + seed, (64, 64)), root / split / "basophil" / f"BA_{seed}.png")
            _save(_field(200 + seed, (80, 72)), root / split / "myeloblast" / f"MYO_{seed}.png")
    shutil.copyfile(root / "train/basophil/BA_0.png", root / "val/basophil/BA_copy.png")
    (root / "train" / "platelets").mkdir()
    (root / "train" / "basophil" / "notes.txt").write_text("not an image")


def test_audit_finds_straddling_copies_and_planted_shortcut(tmp_path: Path) -> None:
    _tiny_dataset(tmp_path)
    report = audit_dataset(tmp_path)
    assert report.counts == {
        ("train", "basophil"): 8,
        ("train", "myeloblast"): 8,
        ("val", "basophil"): 5,
        ("val", "myeloblast"): 4,
    }
    assert [[report.name(i) for i in g] for g in report.straddling] == [
        ["train/basophil/BA_0.png", "val/basophil/BA_copy.png"]
    ]
    assert report.label_conflicts == []
    assert report.sizes["myeloblast"] == {(80, 72): 12}
    assert report.unknown_folders == [tmp_path / "train" / "platelets"]
    assert report.skipped_files == [tmp_path / "train" / "basophil" / "notes.txt"]
    probe = report.shortcut
    assert probe is not None
    assert probe.results[0].accuracy_mean == pytest.approx(1.0)
    assert probe.results[0].chance == pytest.approx(13 / 25)
    assert probe.warning
    markdown = report.to_markdown()
    assert "WARNING: source shortcut" in markdown
    assert "WARNING: duplicates straddle splits" in markdown
    data = json.loads(json.dumps(report.to_json()))
    assert data["shortcut"]["warning"] is True
    assert data["duplicates"]["straddling_splits"] == [
        ["train/basophil/BA_0.png", "val/basophil/BA_copy.png"]
    ]
    assert data["counts"]["val"] == {"basophil": 5, "myeloblast": 4}


def test_audit_flat_layout_without_shortcut(tmp_path: Path) -> None:
    for seed in range(6):
        _save(_field(300 + seed, (64, 64)), tmp_path / "monocyte" / f"MO_{seed}.png")
        _save(_field(400 + seed, (64, 64)), tmp_path / "erythroblast" / f"ERB_{seed}.png")
    report = audit_dataset(tmp_path)
    assert set(report.counts) == {("", "monocyte"), ("", "erythroblast")}
    assert report.straddling == []
    assert report.shortcut is not None
    assert report.shortcut.source is None  # one image size: a single source group
    assert report.duplicates.merged_groups == 0


def test_audit_of_a_single_class_skips_the_probe(tmp_path: Path) -> None:
    _save(_field(1), tmp_path / "monocyte" / "a.png")
    report = audit_dataset(tmp_path)
    assert report.shortcut is None
    assert "skipped" in report.to_markdown()
    assert report.to_json()["shortcut"] is None


def test_probe_needs_two_distinct_groups_per_class(tmp_path: Path) -> None:
    """Copies count once: a class whose images are all copies of one picture cannot be cross-validated."""
    for name, seed in (("monocyte", 1), ("erythroblast", 2)):
        first = _save(_field(seed), tmp_path / name / "a.png")
        shutil.copyfile(first, tmp_path / name / "b.png")
    report = audit_dataset(tmp_path)
    assert report.duplicates.merged_groups == 2
    assert report.shortcut is None


def test_run_audit_prints_json_on_the_last_line_and_writes_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_dataset(tmp_path / "data")
    out = tmp_path / "reports" / "audit.json"
    assert run_audit(tmp_path / "data", as_json=True, out=out) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["images"] == 25
    assert json.loads(out.read_text())["shortcut"]["warning"] is True
    assert run_audit(tmp_path / "data", as_json=False, out=None) == 0
    assert capsys.readouterr().out.startswith("# Dataset audit:")
