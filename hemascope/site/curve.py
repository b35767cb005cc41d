"""How many labelled cells a new site needs: the learning curve of site adaptation.

Per seed, the site's patients are split once into an adaptation pool and an evaluation half (every class
present on both sides). For each size ``n``, patients of the pool are taken in a random order and their cells
added, at most ``n`` per class, until every class has ``n`` (or the pool runs out): a profile is fitted on
those cells (:func:`hemascope.site.adapt.fit_profile`) and every model is scored on the evaluation patients'
cells, which no profile of that seed ever saw, before (the bundle alone) and after adaptation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hemascope.bundle import LoadedBundle
from hemascope.errors import InvalidArgument
from hemascope.site import corrections as fix
from hemascope.site.adapt import AdaptSettings, fit_profile
from hemascope.site.profile import MYELOBLAST

IntArray = fix.IntArray
FloatArray = fix.FloatArray


def split_patients(
    y: IntArray, patients: Sequence[str], n_classes: int, rng: np.random.Generator, tries: int = 200
) -> tuple[list[str], IntArray]:
    """(pool patients in random order, evaluation cell indices): about half the patients each, every class
    on both sides."""
    names = sorted({p for p in patients if p})
    if len(names) < 4:
        raise InvalidArgument("the learning curve needs a dataset naming at least 4 patients (manifest.csv)")
    owner = np.asarray(patients)
    for _ in range(tries):
        order = list(rng.permutation(names))
        pool = set(order[: len(order) // 2])
        in_pool = np.isin(owner, list(pool))
        if all(len(np.unique(y[mask])) == n_classes for mask in (in_pool, ~in_pool & (owner != ""))):
            return [p for p in order if p in pool], np.flatnonzero(~in_pool & (owner != "")).astype(np.int64)
    raise InvalidArgument("cannot split the patients so that every class is on both sides")


def sample_cells(
    y: IntArray, patients: Sequence[str], pool: Sequence[str], per_class: int, n_classes: int
) -> IntArray:
    """Cells of the pool's patients, in pool order, at most ``per_class`` of each class."""
    owner = np.asarray(patients)
    taken: list[int] = []
    counts = np.zeros(n_classes, dtype=np.int64)
    for patient in pool:
        if (counts >= per_class).all():
            break
        for index in np.flatnonzero(owner == patient):
            if counts[y[index]] < per_class:
                taken.append(int(index))
                counts[y[index]] += 1
    return np.asarray(sorted(taken), dtype=np.int64)


def _scores(pred: IntArray, y: IntArray, m: int, n_classes: int) -> dict[str, Any]:
    return {
        "macro_f1": fix.macro_f1(pred, y, n_classes),
        "myeloblast_sensitivity": fix.sensitivity(pred, y, m),
    }


def learning_curve(
    bundle: LoadedBundle,
    scaled: FloatArray,
    y: IntArray,
    patients: Sequence[str],
    *,
    sizes: Sequence[int],
    seeds: int,
    settings: AdaptSettings | None = None,
) -> dict[str, Any]:
    """Per seed and size, the cells used and each model's scores on the evaluation patients, before and
    after; plus means over seeds (``summary``: model -> size -> figures)."""
    classes = list(bundle.manifest.classes)
    k, m = len(classes), classes.index(MYELOBLAST)
    runs: list[dict[str, Any]] = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pool, evaluation = split_patients(y, patients, k, rng)
        before = {
            name: _scores(model.proba(scaled[evaluation]).argmax(axis=1), y[evaluation], m, k)
            for name, model in bundle.models.items()
        }
        for size in sizes:
            chosen = sample_cells(y, patients, pool, size, k)
            cell_patients = [patients[i] for i in chosen]
            profile = fit_profile(
                bundle,
                scaled[chosen],
                y[chosen],
                cell_patients,
                site="learning-curve",
                settings=settings or AdaptSettings(seed=seed),
            )
            after = {}
            for name in bundle.models:
                _, probs = profile.proba(bundle, name, scaled[evaluation])
                after[name] = {
                    **_scores(probs.argmax(axis=1), y[evaluation], m, k),
                    "correction": profile.summary["models"][name]["chosen"],
                }
            runs.append(
                {
                    "seed": seed,
                    "per_class": size,
                    "cells": {c: int((y[chosen] == i).sum()) for i, c in enumerate(classes)},
                    "adapt_patients": len(set(cell_patients)),
                    "eval_cells": len(evaluation),
                    "eval_patients": len({patients[i] for i in evaluation}),
                    "before": before,
                    "after": after,
                }
            )
    return {
        "sizes": list(sizes),
        "seeds": seeds,
        "runs": runs,
        "summary": summarise(runs, list(bundle.models)),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def summarise(runs: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in models:
        per_size: dict[str, Any] = {}
        for size in dict.fromkeys(r["per_class"] for r in runs):
            chosen = [r for r in runs if r["per_class"] == size]
            row: dict[str, Any] = {"runs": len(chosen)}
            for metric in ("macro_f1", "myeloblast_sensitivity"):
                before = [r["before"][name][metric] for r in chosen]
                after = [r["after"][name][metric] for r in chosen]
                row[f"{metric}_before"] = _mean(before)
                row[f"{metric}_after"] = _mean(after)
                row[f"{metric}_after_min"] = min((a for a in after if a is not None), default=None)
                deltas = [
                    a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None
                ]
                row[f"{metric}_lower_runs"] = sum(1 for d in deltas if d < -1e-12)
            row["mean_cells"] = float(np.mean([sum(r["cells"].values()) for r in chosen]))
            per_size[str(size)] = row
        out[name] = per_size
    return out
