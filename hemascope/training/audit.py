"""Dataset audit: counts, image sizes, duplicates (also across splits) and a source-shortcut probe.

The probe fits a trivial model on cues that say nothing about the cell (image size, file size, colour of a
10-pixel border band) and cross-validates it. Accuracy far above chance means the classes can be told
apart by where the images came from, and a model trained on them may learn the scanner, not the cell.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hemascope.datasets import ImageRecord, scan_dataset
from hemascope.errors import InvalidImage
from hemascope.imaging.decode import decode_image
from hemascope.training.duplicates import (
    DuplicateReport,
    dihedral_phashes,
    duplicates_from_hashes,
    file_sha256,
    progress_iter,
)

BORDER = 10
WARN_MARGIN = 0.2
_BORDER_NAMES = [f"border_{s}_{c}" for s in ("mean", "std", "p10", "p90") for c in "rgb"]
FEATURES = ["width", "height", "file_bytes", *_BORDER_NAMES]
PROBES: dict[str, list[str]] = {
    "all non-cell cues": FEATURES,
    "image size + file size": FEATURES[:3],
    "border colour only": _BORDER_NAMES,
}
Size = tuple[int, int]


def border_features(pixels: NDArray[np.uint8]) -> list[float]:
    """Mean, std, 10th and 90th percentile per RGB channel of the outer band (10 px, less on tiny images)."""
    b = min(BORDER, min(pixels.shape[:2]) // 4)
    strips = [pixels[:b], pixels[-b:], pixels[b:-b, :b], pixels[b:-b, -b:]] if b else [pixels]
    px = np.concatenate([s.reshape(-1, 3) for s in strips])
    quantiles = np.quantile(px, [0.1, 0.9], axis=0, method="inverted_cdf")
    stats = [px.mean(0), px.std(0, dtype=np.float64), *quantiles]
    return [float(v) for v in np.concatenate(stats)]


@dataclass
class ProbeResult:
    cues: str
    features: list[str]
    accuracy_mean: float
    accuracy_std: float
    chance: float

    @property
    def warning(self) -> bool:
        return self.accuracy_mean > self.chance + WARN_MARGIN

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "warning": self.warning}


@dataclass
class ShortcutProbe:
    cv: str
    results: list[ProbeResult]  # the first one (all non-cell cues) decides the warning
    model: str = "logistic regression on standardised features"
    source_groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (modal size, classes)
    source: ProbeResult | None = None  # border colour only -> source group

    @property
    def warning(self) -> bool:
        return self.results[0].warning

    def to_json(self) -> dict[str, Any]:
        main = {k: v for k, v in self.results[0].to_json().items() if k not in ("cues", "features")}
        return {
            **asdict(self),
            **main,
            "results": [r.to_json() for r in self.results],
            "source_groups": [{"size": s, "classes": c} for s, c in self.source_groups],
            "source": None if self.source is None else self.source.to_json(),
        }


@dataclass
class AuditReport:
    root: Path
    records: list[ImageRecord]
    counts: dict[tuple[str, str], int]
    sizes: dict[str, Counter[Size]]  # per class: (width, height) -> images
    duplicates: DuplicateReport
    straddling: list[list[int]]  # duplicate groups with members in more than one split
    label_conflicts: list[list[int]]  # duplicate groups with members in more than one class
    shortcut: ShortcutProbe | None  # None: too few images per class to cross-validate
    unknown_folders: list[Path] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def name(self, index: int) -> str:
        return self.records[index].path.relative_to(self.root).as_posix()

    def kind(self, group: list[int]) -> str:
        dist = max((d for i, j, d in self.duplicates.near_pairs if i in group and j in group), default=-1)
        return "byte-identical" if dist < 0 else f"near-duplicate (phash distance <= {dist} bits)"

    def to_markdown(self) -> str:
        return "\n".join(_markdown(self)) + "\n"

    def to_json(self) -> dict[str, Any]:
        dup, names, splits = self.duplicates, self.name, sorted({s for s, _ in self.counts})
        return {
            "root": str(self.root),
            "images": len(self.records),
            "splits": splits,
            "counts": {s: {c: n for (s2, c), n in sorted(self.counts.items()) if s2 == s} for s in splits},
            "sizes": {c: {f"{w}x{h}": n for (w, h), n in sz.most_common()} for c, sz in self.sizes.items()},
            "duplicates": {
                "threshold": dup.threshold,
                "exact_groups": [[names(i) for i in g] for g in dup.exact_groups],
                "near_pairs": [{"a": names(i), "b": names(j), "distance": d} for i, j, d in dup.near_pairs],
                "merged_groups": dup.merged_groups,
                "largest_component": dup.largest_component,
                "groups": [{"kind": self.kind(g), "files": [names(i) for i in g]} for g in dup.components()],
                "straddling_splits": [[names(i) for i in g] for g in self.straddling],
                "label_conflicts": [[names(i) for i in g] for g in self.label_conflicts],
                "distance_counts": {str(d): int(n) for d, n in enumerate(dup.distance_counts) if n},
            },
            "shortcut": None if self.shortcut is None else self.shortcut.to_json(),
            "unknown_folders": [str(p) for p in self.unknown_folders],
            "skipped_files": [str(p) for p in self.skipped_files],
            "unreadable": [names(i) for i in dup.unreadable],
            "seconds": round(self.seconds, 2),
        }


def _pct(r: ProbeResult) -> str:
    return f"{r.accuracy_mean:.3f} +/- {r.accuracy_std:.3f} (chance {r.chance:.3f})"


def _markdown(rep: AuditReport) -> list[str]:
    splits, classes = sorted({s for s, _ in rep.counts}) or [""], sorted({c for _, c in rep.counts})
    out = [
        f"# Dataset audit: {rep.root}\n\n{len(rep.records)} images, {len(classes)} classes, splits: "
        f"{', '.join(s or '(flat)' for s in splits)}; audited in {rep.seconds:.1f} s.\n\n## Counts\n"
    ]
    head = " | ".join(s or "images" for s in splits)
    out.append(f"| class | {head} | total |\n{'|---' * (len(splits) + 2)}|")
    for c in [*classes, "total"]:
        n = [sum(v for (s2, c2), v in rep.counts.items() if s2 == s and c in (c2, "total")) for s in splits]
        out.append(f"| {c} | {' | '.join(map(str, n))} | {sum(n)} |")
    out.append("\n## Image sizes (width x height: images)\n")
    for c, sz in rep.sizes.items():
        out.append(f"- {c}: {', '.join(f'{w}x{h}: {n}' for (w, h), n in sz.most_common())}")
    return [*out, *_md_duplicates(rep), *_md_probe(rep), *_md_unread(rep)]


def _md_duplicates(rep: AuditReport) -> list[str]:
    dup, groups = rep.duplicates, rep.duplicates.components()
    hist = ", ".join(f"{d}: {dup.distance_counts[d]}" for d in range(0, min(64, dup.threshold + 8) + 1, 2))
    out = [
        f"\n## Duplicates\n\n- byte-identical groups (SHA-256): {len(dup.exact_groups)} "
        f"({sum(map(len, dup.exact_groups))} files)\n- near-duplicate pairs (phash, flips and rotations "
        f"included, <= {dup.threshold} bits): {len(dup.near_pairs)}\n- merged duplicate groups: "
        f"{dup.merged_groups}, largest {dup.largest_component} images\n- groups straddling splits: "
        f"{len(rep.straddling)}; groups mixing classes: {len(rep.label_conflicts)}\n"
        f"- image pairs per phash distance (bits, min over the 8 flips/rotations): {hist}"
    ]
    if rep.straddling:
        out.append("- **WARNING: duplicates straddle splits: evaluation on those images is leaked.**")
    if rep.label_conflicts:
        out.append("- **WARNING: duplicate images carry different class labels.**")
    out += [f"\n### Duplicate groups ({len(groups)})\n"] if groups else []
    for g in groups[:100]:
        tag = " [straddles splits]" if g in rep.straddling else ""
        out.append(f"- {rep.kind(g)}{tag}: " + ", ".join(rep.name(i) for i in g))
    return out + ([f"- ... {len(groups) - 100} more (see --json)"] if len(groups) > 100 else [])


def _md_probe(rep: AuditReport) -> list[str]:
    probe = rep.shortcut
    if probe is None:
        return ["\n## Source-shortcut probe\n\nskipped: needs 2 classes with 2 readable images or more each"]
    out = [
        f"\n## Source-shortcut probe\n\nModel: {probe.model}; {probe.cv}. None of the cues shows the "
        "cell.\n\n| cues | features | CV accuracy |\n|---|---|---|"
    ]
    out += [f"| {r.cues} | {', '.join(r.features)} | {_pct(r)} |" for r in probe.results]
    main = probe.results[0]
    if probe.warning:
        out.append(
            f"\n**WARNING: source shortcut. Non-cell cues alone predict the class with accuracy "
            f"{main.accuracy_mean:.3f}; chance is {main.chance:.3f}. A classifier can score well here "
            "by recognising the source (scanner, image size, staining) instead of the cell: evaluate "
            "it on images from another source and with duplicate-grouped splits.**"
        )
    groups = "; ".join(f"{s}: {', '.join(c)}" for s, c in probe.source_groups)
    out.append(f"\nSource groups (classes by modal image size): {groups}.")
    if probe.source is not None:
        out.append(f"Border colour alone predicts the source group: {_pct(probe.source)}.")
        if probe.source.warning:
            out.append(
                "**WARNING: resizing would not remove the shortcut: border colour gives the source away.**"
            )
    return out


def _md_unread(rep: AuditReport) -> list[str]:
    out = [f"- unknown folder: {p}" for p in rep.unknown_folders]
    out += [f"- skipped file (not an image): {p}" for p in rep.skipped_files]
    out += [f"- unreadable image: {rep.name(i)}" for i in rep.duplicates.unreadable]
    return ["\n## Not read\n", *(out or ["nothing"])]


def _folds(y: NDArray[Any], groups: NDArray[np.int64]) -> int:
    """Up to 5 folds, no more than any class has distinct duplicate groups (so every fold sees it)."""
    return min(5, *(len(set(groups[y == c].tolist())) for c in np.unique(y)))


def _cv_probe(
    x: NDArray[np.float64], y: NDArray[Any], groups: NDArray[np.int64], cues: str, columns: list[str]
) -> ProbeResult:
    _, class_counts = np.unique(y, return_counts=True)
    cv = StratifiedGroupKFold(n_splits=_folds(y, groups), shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cg", max_iter=1000))
    cols = [FEATURES.index(c) for c in columns]
    scores = cross_val_score(model, x[:, cols], y, cv=cv, groups=groups)
    chance = float(class_counts.max() / class_counts.sum())
    return ProbeResult(cues, columns, float(scores.mean()), float(scores.std()), chance)


def shortcut_probe(
    x: NDArray[np.float64], labels: list[str], groups: NDArray[np.int64], sizes: dict[str, Counter[Size]]
) -> ShortcutProbe | None:
    """Cross-validated accuracy of a trivial model on cell-free cues (rows of :data:`FEATURES`); ``None``
    with too few images per class. Source groups: classes sharing a modal image size (from ``sizes``)."""
    y = np.array(labels)
    classes = np.unique(y)
    if len(classes) < 2 or _folds(y, groups) < 2:
        return None
    results = [_cv_probe(x, y, groups, cues, cols) for cues, cols in PROBES.items()]
    cv = f"{_folds(y, groups)}-fold stratified CV, grouped by duplicate group"
    probe = ShortcutProbe(cv, results)
    modal = {c: "{}x{}".format(*sizes[c].most_common(1)[0][0]) for c in classes.tolist()}
    probe.source_groups = [(m, [c for c in modal if modal[c] == m]) for m in sorted(set(modal.values()))]
    source = np.array([modal[c] for c in labels])
    if len(probe.source_groups) >= 2 and _folds(source, groups) >= 2:
        probe.source = _cv_probe(x, source, groups, "border colour only -> source group", _BORDER_NAMES)
    return probe


def audit_dataset(root: Path, *, progress: bool = False) -> AuditReport:
    """Audit a folder-per-class dataset (``ROOT/<split>/<class>/*`` or ``ROOT/<class>/*``)."""
    start = time.perf_counter()
    scan = scan_dataset(root)
    records = scan.records
    digests: list[str] = []
    hashes = np.zeros((len(records), 8), np.uint64)
    readable = [False] * len(records)
    rows: list[list[float]] = []
    sizes: dict[str, Counter[Size]] = {}
    for index, record in enumerate(progress_iter(records, progress, "auditing")):
        data = record.path.read_bytes()
        digests.append(file_sha256(data))
        try:
            pixels = decode_image(data).pixels
        except InvalidImage:
            continue
        readable[index] = True
        hashes[index] = dihedral_phashes(pixels)
        h, w = pixels.shape[:2]
        sizes.setdefault(record.label, Counter())[(w, h)] += 1
        rows.append([float(w), float(h), float(len(data)), *border_features(pixels)])
    dup = duplicates_from_hashes(digests, hashes, readable)
    ok = [i for i, flag in enumerate(readable) if flag]
    x = np.array(rows, dtype=np.float64).reshape(len(ok), len(FEATURES))
    components = dup.components()
    return AuditReport(
        root=root,
        records=records,
        counts=scan.counts(),
        sizes=dict(sorted(sizes.items())),
        duplicates=dup,
        straddling=[g for g in components if len({records[i].split for i in g}) > 1],
        label_conflicts=[g for g in components if len({records[i].label for i in g}) > 1],
        shortcut=shortcut_probe(x, [records[i].label for i in ok], dup.group_of[ok], sizes),
        unknown_folders=scan.unknown_folders,
        skipped_files=scan.skipped_files,
        seconds=time.perf_counter() - start,
    )
