"""The images the explanations are evaluated on: held-out test images of the bundle and the probe.

The bundle's test part is not stored as a file list; the training command records how it was drawn (the
dataset, grouped duplicates, :func:`hemascope.training.split.grouped_split` with the manifest's seed), so
it is reproduced here exactly and checked against the sizes the manifest records. The duplicate search
takes a minute or two; its outcome (the test paths) is cached under the work directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def _split_cache(work: Path, root: Path, seed: int) -> Path:
    return work / f"test-split-{root.resolve().name}-seed{seed}.json"


def held_out_paths(root: Path, bundle: LoadedBundle, work: Path) -> list[tuple[Path, str]]:
    """(path, class) of every image the bundle's training split put in its test part."""
    from hemascope.training.duplicates import find_duplicates
    from hemascope.training.split import grouped_split

    split_info = dict(bundle.manifest.training.get("split", {}))
    seed = int(split_info.get("seed", 50))
    cache = _split_cache(work, root, seed)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        return [(Path(p), label) for p, label in cached]
    scan = scan_dataset(root)
    paths = [r.path for r in scan.records]
    y = np.asarray([CLASSES.index(r.label) for r in scan.records], dtype=np.int64)
    dups = find_duplicates(paths)
    split = grouped_split(y, dups.group_of, seed=seed)
    expected = split_info.get("test")
    if expected is not None and int(expected) != len(split.test):
        raise RuntimeError(f"reproduced test part has {len(split.test)} images, the manifest says {expected}")
    test = [(str(paths[i]), scan.records[i].label) for i in sorted(split.test.tolist())]
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(test))
    return [(Path(p), label) for p, label in test]


def stratified(items: list[tuple[Path, str]], count: int, seed: int = 0) -> list[EvalImage]:
    """``count`` items, as equal per class as possible, drawn reproducibly; ordered class by class."""
    rng = np.random.default_rng(seed)
    by_class = {c: sorted(p for p, label in items if label == c) for c in CLASSES}
    present = [c for c in CLASSES if by_class[c]]
    per = [count // len(present) + (1 if i < count % len(present) else 0) for i in range(len(present))]
    chosen: list[EvalImage] = []
    for c, n in zip(present, per, strict=True):
        paths = by_class[c]
        picks = sorted(rng.choice(len(paths), size=min(n, len(paths)), replace=False).tolist())
        chosen += [EvalImage(paths[i], CLASSES.index(c), SCANNER_OF[c], "test") for i in picks]
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
