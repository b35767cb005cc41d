"""The images the explanations are evaluated on: held-out test images of the bundle and the probe.

The bundle's test part is not stored as a file list; the training command records how it was drawn (the
dataset, grouped duplicates, :func:`hemascope.training.split.grouped_split` with the manifest's seed), so
it is reproduced here exactly and checked against the sizes the manifest records. A bundle trained on
several laboratories records its sources (roots, sites, grouping); their split is reproduced the same way
(:meth:`hemascope.training.multisource.SourcedData.split`: every source scanned, duplicates found across
them, patients merged into groups, stratified by class and site), so its test part holds images of every
training laboratory. The duplicate search takes a minute or two; its outcome (the test paths with their
class and site) is cached under the work directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.bundle import LoadedBundle
from hemascope.datasets import CLASSES, scan_dataset
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import Preprocessing, preprocessing_for_version

#: The cross-scanner probe's images all show this class.
PROBE_CLASS = "seg_neutrophil"
#: Classes imaged by each scanner (see ../shared/data/README.md).
SCANNER_OF: dict[str, str] = {
    "basophil": "barcelona",
    "erythroblast": "barcelona",
    "monocyte": "barcelona",
    "myeloblast": "munich",
    "seg_neutrophil": "munich",
}


@dataclass(frozen=True)
class EvalImage:
    path: Path
    label: int  # index into CLASSES
    scanner: str
    group: str  # "test" (held out by the bundle's split) or "probe"


#: (path, class, site) of one held-out image
HeldOut = tuple[Path, str, str]


def _split_cache(work: Path, name: str, seed: int) -> Path:
    return work / f"test-split-{name}-seed{seed}.json"


def _sources(bundle: LoadedBundle, data_dir: Path) -> list[Any]:
    """The bundle's recorded sources as dataset specs (roots moved under ``data_dir`` when the recorded
    ones are not on this machine), or [] for a bundle trained on one dataset."""
    from hemascope.training.sources import DatasetSpec

    recorded = bundle.manifest.training.get("sources") or []
    if sum(1 for s in recorded if s.get("role", "train") == "train") < 2:
        return []
    specs = []
    for entry in recorded:
        root = Path(entry["root"])
        specs.append(
            DatasetSpec(
                name=entry["name"],
                root=root if root.is_dir() else data_dir / root.name,
                site=entry.get("site"),
                sites=dict(entry.get("sites") or {}),
                groups=entry.get("groups", "duplicates"),
                role=entry.get("role", "train"),
            )
        )
    return specs


def held_out_paths(root: Path, bundle: LoadedBundle, work: Path) -> list[HeldOut]:
    """(path, class, site) of every image the bundle's training split put in its test part; ``root`` is the
    dataset of a single-dataset bundle (a multi-source bundle's sources are in its manifest)."""
    split_info = dict(bundle.manifest.training.get("split", {}))
    seed = int(split_info.get("seed", 50))
    specs = _sources(bundle, root.parent)
    name = f"sources-{bundle.manifest.data_fingerprint[:12]}" if specs else root.resolve().name
    cache = _split_cache(work, name, seed)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        return [(Path(e[0]), e[1], e[2] if len(e) > 2 else SCANNER_OF[e[1]]) for e in cached]
    test = _multisource_test(specs, seed) if specs else _single_test(root, seed)
    expected = split_info.get("test")
    if expected is not None and int(expected) != len(test):
        raise RuntimeError(f"reproduced test part has {len(test)} images, the manifest says {expected}")
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([[str(p), label, site] for p, label, site in test]))
    return test


def _multisource_test(specs: list[Any], seed: int) -> list[HeldOut]:
    from hemascope.training.multisource import load_sourced

    sourced = load_sourced(specs)
    rows = sourced.train_rows[sourced.split(seed).test]
    records = sourced.scan.records
    return [(records[i].path, records[i].label, records[i].site) for i in sorted(rows.tolist())]


def _single_test(root: Path, seed: int) -> list[HeldOut]:
    from hemascope.training.duplicates import find_duplicates
    from hemascope.training.split import grouped_split

    scan = scan_dataset(root)
    paths = [r.path for r in scan.records]
    y = np.asarray([CLASSES.index(r.label) for r in scan.records], dtype=np.int64)
    dups = find_duplicates(paths)
    split = grouped_split(y, dups.group_of, seed=seed)
    labels = [scan.records[i].label for i in sorted(split.test.tolist())]
    return [(paths[i], c, SCANNER_OF[c]) for i, c in zip(sorted(split.test.tolist()), labels, strict=True)]


def _shares(count: int, sizes: list[int]) -> list[int]:
    """``count`` split as equally as possible over groups of ``sizes`` (none above its size)."""
    shares = [0] * len(sizes)
    for _ in range(min(count, sum(sizes))):
        open_groups = [i for i, size in enumerate(sizes) if shares[i] < size]
        shares[min(open_groups, key=lambda i: shares[i])] += 1
    return shares


def stratified(items: list[HeldOut], count: int, seed: int = 0) -> list[EvalImage]:
    """``count`` items, as equal per class as possible and within a class as equal per site (laboratory)
    as possible, drawn reproducibly; ordered class by class, then site by site."""
    rng = np.random.default_rng(seed)
    by_class = {c: sorted((p, site) for p, label, site in items if label == c) for c in CLASSES}
    present = [c for c in CLASSES if by_class[c]]
    per = [count // len(present) + (1 if i < count % len(present) else 0) for i in range(len(present))]
    chosen: list[EvalImage] = []
    for c, n in zip(present, per, strict=True):
        sites = sorted({site for _, site in by_class[c]})
        groups = [[p for p, site in by_class[c] if site == s] for s in sites]
        for site, paths, share in zip(sites, groups, _shares(n, [len(g) for g in groups]), strict=True):
            picks = sorted(rng.choice(len(paths), size=share, replace=False).tolist())
            chosen += [EvalImage(paths[i], CLASSES.index(c), site, "test") for i in picks]
    return chosen


def probe_images(root: Path, count: int, seed: int = 0) -> list[EvalImage]:
    """``count`` probe neutrophils (Barcelona scanner), drawn reproducibly."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False).tolist())
    return [EvalImage(paths[i], CLASSES.index(PROBE_CLASS), "barcelona", "probe") for i in picks]


def bundle_preprocessing(bundle: LoadedBundle) -> Preprocessing:
    return preprocessing_for_version(bundle.manifest.preprocessing)


def decoded(image: EvalImage) -> NDArray[np.uint8]:
    """The image's decoded RGB pixels, as the services decode them."""
    return decode_image(image.path.read_bytes()).pixels


def prepare(images: list[EvalImage], preprocessing: Preprocessing) -> NDArray[np.uint8]:
    """The images decoded and prepared as the services do, stacked ``N x S x S x 3``."""
    return np.stack([preprocessing.prepare(decoded(im)) for im in images])
