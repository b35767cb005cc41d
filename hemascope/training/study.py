"""``hemascope study robustness``: every preprocessing option, with augmentation off and on, scored on the
same-source held-out part and on the cross-source probe; the default is chosen by probe accuracy.

Each row is the training pipeline itself (:func:`hemascope.training.fit.train_one`) run for logistic
regression on the same grouped split as ``hemascope train classifiers``: scaler, model and OOD model fitted
on the FIT part (plus its augmented copies), temperature, abstain and OOD thresholds on the CALIBRATION part,
metrics on the held-out test part and on the probe. The probe only ever scores; the choice rule is

1. same-source macro-F1 >= ``min_f1`` (0.95), and
2. same-source myeloblast false-positive rate no higher than the plain pipeline's (plain preprocessing,
   no augmentation): every option that exceeds it is flagged and excluded,

then the highest probe accuracy (ties: higher macro-F1, then cheaper embedding).

Embeddings are cached per (option, augmentation) under the cache folder as ``.npz`` files (no pickles),
keyed by the image list, the option's version, the backbone and the augmentation settings, so a rerun
embeds nothing that it already has.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.datasets import CLASSES, scan_dataset
from hemascope.training.augment import DEFAULT_AUGMENT, embed_augmented
from hemascope.training.crosssource import probe_records
from hemascope.training.fit import FitSettings, TrainingData, fit_scaler_and_ood, train_one
from hemascope.training.models import MODELS
from hemascope.training.sets import embed_set, embedder, preprocessing_options
from hemascope.training.split import Split, grouped_split

FloatArray = NDArray[np.float64]
MODEL = "logistic_regression"
BASELINE = "plain"


@dataclass
class StudyConfig:
    data: Path
    probe: Path
    out: Path
    cache: Path
    options: Sequence[str] | None = None  # None: every registered preprocessing option
    augment: int = 2  # copies per fit image in the "augmentation on" rows
    #: augmentation rows only for plain and the this-many best options without augmentation (None: all).
    #: Augmented embedding costs ~1.4x an option's plain pass, so a full grid is hours on 2 cores.
    augment_top: int | None = 3
    seed: int = 50
    #: the study compares preprocessing options on the frozen ImageNet backbone, which serves any of them
    backbone: str | None = "efficientnet_lite0"
    min_f1: float = 0.95
    log: Callable[[str], None] = print
    progress: bool = False
    command: str = ""
    stats: dict[str, int] = field(default_factory=lambda: {"embedded": 0, "cache_hits": 0})


def _version(option: str) -> str:
    from hemascope.imaging.preprocess import get_preprocessing

    return get_preprocessing(option).version


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def _cached(
    path: Path, key: str, make: Callable[[], dict[str, NDArray[Any]]], cfg: StudyConfig
) -> dict[str, NDArray[Any]]:
    """Arrays from ``path`` when it was made for ``key``; else ``make()``, saved there (atomically)."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                cfg.stats["cache_hits"] += 1
                return {name: stored[name] for name in stored.files}
    arrays = make()
    cfg.stats["embedded"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    payload: dict[str, Any] = {"key": np.array(key), **arrays}
    with partial.open("wb") as handle:
        np.savez(handle, **payload)
    partial.replace(path)
    return arrays


def _embed(paths: Sequence[Path], option: str, cfg: StudyConfig) -> dict[str, NDArray[Any]]:
    started = time.perf_counter()
    emb = embed_set(paths, backbone=cfg.backbone, preprocessing=option, progress=cfg.progress)
    seconds = time.perf_counter() - started
    return {
        "vectors": emb.vectors,
        "seconds": np.array(seconds),
        "preprocessing": np.array(emb.preprocessing),
    }


def _groups(paths: Sequence[Path], cfg: StudyConfig) -> NDArray[np.int64]:
    from hemascope.training.duplicates import find_duplicates

    def make() -> dict[str, NDArray[Any]]:
        cfg.log(f"finding duplicates among {len(paths)} images (once; cached)")
        return {"group_of": find_duplicates(paths, progress=cfg.progress).group_of.astype(np.int64)}

    arrays = _cached(cfg.cache / "duplicates.npz", _key("duplicates", *paths), make, cfg)
    return np.asarray(arrays["group_of"], dtype=np.int64)


def _row(
    option: str, copies: int, data: TrainingData, cfg: StudyConfig, ms_per_image: float
) -> dict[str, Any]:
    settings = FitSettings(cv_folds=0, seed=cfg.seed, log=cfg.log)
    scaler, ood = fit_scaler_and_ood(data, settings)
    result, _ = train_one(MODELS[MODEL], data, scaler, ood, settings)
    test, referral = result["test"], result["referral"]
    probe = referral["probe"]
    specificity = test["malignant"]["specificity"]
    return {
        "option": option,
        "augment": copies,
        "macro_f1": test["macro_f1"],
        "accuracy": test["accuracy"],
        "myeloblast_fpr": None if specificity is None else 1 - specificity,
        "myeloblast_sensitivity": test["malignant"]["sensitivity"],
        "probe_accuracy": probe["accuracy"],
        "probe_called": probe["called"],
        "probe_referred": probe["referred"],
        "probe_errors_referred": probe["errors_referred"],
        "probe_errors": probe["errors"],
        "coverage_with_referral": referral["test"]["coverage"],
        "answered_accuracy": referral["test"]["answered_accuracy"],
        "ood_threshold": referral["ood_threshold"],
        "ms_per_image": ms_per_image,
        "fit_images": len(data.split.fit) + len(data.aug_source),
    }


def choose(rows: list[dict[str, Any]], baseline: dict[str, Any], min_f1: float) -> dict[str, Any] | None:
    """Flags rows whose myeloblast FPR exceeds the baseline's; returns the chosen row (or None)."""
    limit = baseline["myeloblast_fpr"] or 0.0
    for row in rows:
        row["fpr_above_plain"] = bool((row["myeloblast_fpr"] or 0.0) > limit + 1e-12)
        row["eligible"] = bool(row["macro_f1"] >= min_f1 and not row["fpr_above_plain"])
    eligible = [r for r in rows if r["eligible"]]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r["probe_accuracy"], r["macro_f1"], -r["ms_per_image"]))


@dataclass(frozen=True)
class _Inputs:
    paths: list[Path]
    y: NDArray[np.int64]
    groups: NDArray[np.int64]
    split: Split
    probe_paths: list[Path]
    probe_y: NDArray[np.int64]


def _sets(
    option: str, inp: _Inputs, cfg: StudyConfig
) -> tuple[dict[str, NDArray[Any]], dict[str, NDArray[Any]]]:
    folder, version = cfg.cache / option, _version(option)
    base = _cached(
        folder / "data.npz",
        _key("data", version, cfg.backbone, *inp.paths),
        lambda: _embed(inp.paths, option, cfg),
        cfg,
    )
    probe = _cached(
        folder / "probe.npz",
        _key("probe", version, cfg.backbone, *inp.probe_paths),
        lambda: _embed(inp.probe_paths, option, cfg),
        cfg,
    )
    return base, probe


def _augmented(option: str, copies: int, inp: _Inputs, cfg: StudyConfig) -> dict[str, NDArray[Any]]:
    fit_paths = [inp.paths[i] for i in inp.split.fit]

    # the augmented pixels do not depend on the option: made once, kept as PNG and shared by every option
    pixels_key = _key("augmented-pixels", DEFAULT_AUGMENT.version, copies, cfg.seed, *fit_paths)
    keep = cfg.cache / "augmented" / pixels_key[:16]

    def make() -> dict[str, NDArray[Any]]:
        cfg.log(f"  embedding {copies} augmented copies of {len(fit_paths)} fit images")
        embed = embedder(backbone=cfg.backbone, preprocessing=option)
        vectors, sources = embed_augmented(fit_paths, copies, embed, seed=cfg.seed, keep=keep)
        return {"vectors": vectors, "sources": sources}

    key = _key("augment", _version(option), cfg.backbone, pixels_key)
    return _cached(cfg.cache / option / f"augment-{copies}.npz", key, make, cfg)


def _option_row(option: str, copies: int, inp: _Inputs, cfg: StudyConfig) -> dict[str, Any]:
    base, probe = _sets(option, inp, cfg)
    ms = 1000 * float(base["seconds"]) / len(inp.paths)
    data = TrainingData(np.asarray(base["vectors"], np.float64), inp.y, inp.groups, inp.split)
    data.probe_x, data.probe_y = np.asarray(probe["vectors"], np.float64), inp.probe_y
    if copies:
        aug = _augmented(option, copies, inp, cfg)
        data.aug_x = np.asarray(aug["vectors"], np.float64)
        data.aug_source = inp.split.fit[np.asarray(aug["sources"], np.int64)]
    row = _row(option, copies, data, cfg, ms)
    cfg.log(
        f"  {option} augment {copies}: macro-F1 {row['macro_f1']:.4f}, probe accuracy "
        f"{row['probe_accuracy']:.3f}, probe errors referred {row['probe_errors_referred'] or 0:.3f}, "
        f"myeloblast FPR {row['myeloblast_fpr']:.4f}"
    )
    return row


def augmentation_candidates(
    rows: Sequence[dict[str, Any]], plain: str, top: int | None, min_f1: float
) -> list[str]:
    """Options that get an augmentation row: plain, then the best ``top`` by probe accuracy among those that
    reach ``min_f1`` without augmentation (all options when ``top`` is None)."""
    if top is None:
        return [r["option"] for r in rows]
    ranked = sorted(
        (r for r in rows if r["option"] != plain and r["macro_f1"] >= min_f1),
        key=lambda r: (-r["probe_accuracy"], -r["macro_f1"]),
    )
    return [plain, *[r["option"] for r in ranked[:top]]]


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Runs every (option, augmentation) row; writes study.json, study.md and study.png to ``cfg.out``."""
    from hemascope.training import study_report

    scan = scan_dataset(cfg.data)
    paths = [r.path for r in scan.records]
    y = np.asarray([CLASSES.index(r.label) for r in scan.records], dtype=np.int64)
    records = probe_records(cfg.probe, CLASSES)
    groups = _groups(paths, cfg)
    inp = _Inputs(
        paths,
        y,
        groups,
        grouped_split(y, groups, seed=cfg.seed),
        [r.path for r in records],
        np.asarray([CLASSES.index(r.label) for r in records], dtype=np.int64),
    )
    options = list(cfg.options or preprocessing_options())
    plain = BASELINE  # the study's own pipeline, whatever the default has become
    if plain not in options:
        options.insert(0, plain)  # the baseline every row is compared with
    rows = []
    for option in options:
        cfg.log(f"option {option}: embedding (cached under {cfg.cache})")
        rows.append(_option_row(option, 0, inp, cfg))
    if cfg.augment:
        for option in augmentation_candidates(rows, plain, cfg.augment_top, cfg.min_f1):
            cfg.log(f"option {option}: with {cfg.augment} augmented copies per fit image")
            rows.append(_option_row(option, cfg.augment, inp, cfg))
    baseline = next(r for r in rows if r["option"] == plain and r["augment"] == 0)
    chosen = choose(rows, baseline, cfg.min_f1)
    split = inp.split
    study: dict[str, Any] = {
        "command": cfg.command,
        "data": {"root": str(cfg.data), "images": len(paths)},
        "probe": {"root": str(cfg.probe), "images": len(records)},
        "split": {
            "seed": cfg.seed,
            "fit": len(split.fit),
            "calib": len(split.calib),
            "test": len(split.test),
        },
        "model": MODEL,
        "augmentation": {
            "copies": cfg.augment,
            "version": DEFAULT_AUGMENT.version,
            "top": cfg.augment_top,
        },
        "rule": {"min_macro_f1": cfg.min_f1, "max_myeloblast_fpr": baseline["myeloblast_fpr"]},
        "baseline": {"option": plain, "augment": 0},
        "rows": rows,
        "chosen": None if chosen is None else {"option": chosen["option"], "augment": chosen["augment"]},
        "cache": {"folder": str(cfg.cache), **cfg.stats},
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "study.json").write_text(json.dumps(study, indent=1))
    study_report.write(study, cfg.out)
    return study
