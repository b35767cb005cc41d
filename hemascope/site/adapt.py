"""Fitting a site profile (:mod:`hemascope.site.profile`) on one laboratory's labelled cells.

For every model of the bundle, grouped cross-validation on the site's cells (folds never split a patient;
without patients every cell is its own group) scores each candidate correction out of fold:

- an adapter (``none``, ``shift``, ``standardise``) fitted on the training folds' cells;
- a temperature alone, or a temperature with a per-class bias, fitted on the training folds' probabilities.

The unadapted bundle is the baseline. A candidate that changes labels (an adapter or a bias) is kept only
when its cross-validated macro-F1 is higher than the baseline's by more than ``min_gain``; otherwise only a
temperature is kept, and only if it lowers the cross-validated log-loss (a temperature never changes a
label). Every candidate is first made to call at least as many myeloblasts as the unadapted bundle: its
myeloblast logit is raised by the smallest amount that restores the unadapted myeloblast sensitivity on the
site's cells, out of fold and when refitted on every cell
(:func:`~hemascope.site.corrections.myeloblast_boost`); and wherever the bundle alone calls a cell myeloblast,
the profile keeps that call (:func:`~hemascope.site.profile.keep_calls`), in cross-validation as in serving.
The chosen correction is refitted on every cell; the abstain threshold is re-chosen on the out-of-fold
probabilities at the target coverage, and, when the bundle has an OOD model, the site's own OOD reference is
fitted on every cell with thresholds at a quantile of out-of-fold scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from hemascope.bundle import LoadedBundle, OodModel, softmax
from hemascope.errors import InvalidArgument
from hemascope.site import corrections as fix
from hemascope.site.profile import (
    ADAPTERS,
    MYELOBLAST,
    AdapterKind,
    BundleRef,
    ModelCorrection,
    SiteProfile,
    keep_calls,
)
from hemascope.training import calibration as cal
from hemascope.training.ood import DEFAULT_QUANTILE, fit_ood, ood_threshold

FloatArray = fix.FloatArray
IntArray = fix.IntArray
Split = tuple[IntArray, IntArray]


@dataclass(frozen=True)
class AdaptSettings:
    folds: int = 5
    seed: int = 0
    #: coverage the re-chosen abstain thresholds keep on the site's cells
    target_coverage: float = 0.95
    ood_quantile: float = DEFAULT_QUANTILE
    #: a label-changing refit is kept only when it raises the cross-validated macro-F1 by more than this
    min_gain: float = 0.0
    adapters: tuple[AdapterKind, ...] = ADAPTERS


@dataclass(frozen=True)
class Candidate:
    adapter: AdapterKind
    bias: bool

    @property
    def name(self) -> str:
        parts = [] if self.adapter == "none" else [self.adapter]
        return "+".join([*parts, "temperature+bias" if self.bias else "temperature"])


def group_ids(patients: Sequence[str]) -> IntArray:
    """One id per patient; a cell without a patient is its own group."""
    keys = [p if p else f"\0cell{i}" for i, p in enumerate(patients)]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys], dtype=np.int64)


def cv_splits(y: IntArray, groups: IntArray, folds: int, seed: int) -> list[Split]:
    """Grouped, class-stratified folds (at most ``folds``, at most one per group)."""
    n_groups = len(np.unique(groups))
    k = min(folds, n_groups)
    if k < 2:
        raise InvalidArgument(
            "adapting needs cells from at least 2 patients (or 2 cells without patients) to cross-validate"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (train.astype(np.int64), test.astype(np.int64))
        for train, test in splitter.split(np.zeros(len(y)), y, groups)
    ]


def _adapted(scaled: FloatArray, y: IntArray, rows: IntArray, kind: AdapterKind) -> FloatArray:
    if kind == "none":
        return scaled
    scale, offset = fix.adapter_arrays(kind, *fix.balanced_stats(scaled[rows], y[rows]))
    out: FloatArray = scaled * scale + offset
    return out


class _ModelFit:
    """Cross-validated candidates of one model."""

    def __init__(
        self, bundle: LoadedBundle, name: str, scaled: FloatArray, y: IntArray, splits: list[Split]
    ) -> None:
        self.model = bundle.models[name]
        self.scaled, self.y, self.splits = scaled, y, splits
        self.k = len(bundle.manifest.classes)
        self.m = list(bundle.manifest.classes).index(MYELOBLAST)
        self.base_logp = fix.log_proba(self.model.proba(scaled))
        base_pred = self.base_logp.argmax(axis=1)
        self.base_sens = fix.sensitivity(base_pred, y, self.m)
        self.needed = math.ceil((self.base_sens or 0.0) * int((y == self.m).sum()) - 1e-9)
        self._fold_logp: dict[AdapterKind, list[FloatArray]] = {}

    def fold_logp(self, kind: AdapterKind) -> list[FloatArray]:
        if kind not in self._fold_logp:
            self._fold_logp[kind] = [
                self.base_logp
                if kind == "none"
                else fix.log_proba(self.model.proba(_adapted(self.scaled, self.y, train, kind)))
                for train, _ in self.splits
            ]
        return self._fold_logp[kind]

    def out_of_fold(self, candidate: Candidate) -> tuple[FloatArray, float]:
        """Guarded out-of-fold logits of ``candidate`` and the myeloblast boost the guard applied."""
        logits = np.zeros_like(self.base_logp)
        for (train, test), logp in zip(self.splits, self.fold_logp(candidate.adapter), strict=True):
            temperature, bias = fix.fit_calibration(logp[train], self.y[train], bias=candidate.bias)
            logits[test] = fix.calibrated_logits(logp[test], temperature, bias)
        boost = fix.myeloblast_boost(logits, self.y, self.m, self.needed)
        logits[:, self.m] += boost
        return keep_calls(self.base_logp, logits, self.m), boost

    def refit(self, candidate: Candidate) -> tuple[float, FloatArray, float]:
        """``(temperature, bias, boost)`` of ``candidate`` fitted on every cell, guard included."""
        logp = fix.log_proba(
            self.model.proba(_adapted(self.scaled, self.y, np.arange(len(self.y)), candidate.adapter))
        )
        temperature, bias = fix.fit_calibration(logp, self.y, bias=candidate.bias)
        logits = fix.calibrated_logits(logp, temperature, bias)
        return temperature, bias, fix.myeloblast_boost(logits, self.y, self.m, self.needed)


def _choose(fit: _ModelFit, settings: AdaptSettings) -> tuple[Candidate, FloatArray, dict[str, Any]]:
    y = fit.y
    baseline = fix.candidate_summary(fit.base_logp.argmax(axis=1), y, fit.base_logp, fit.m)
    results: dict[str, Any] = {}
    oof: dict[Candidate, FloatArray] = {}
    order = [Candidate(kind, bias) for kind in settings.adapters for bias in (False, True)]
    for candidate in order:
        logits, boost = fit.out_of_fold(candidate)
        oof[candidate] = logits
        results[candidate.name] = {
            **fix.candidate_summary(logits.argmax(axis=1), y, logits, fit.m),
            "myeloblast_boost": boost,
        }
    plain = Candidate("none", False)
    changing = [c for c in order if c != plain]
    best = max(changing, key=lambda c: results[c.name]["macro_f1"], default=plain)
    gain = results[best.name]["macro_f1"] - baseline["macro_f1"] if best != plain else 0.0
    chosen = best if gain > settings.min_gain else plain
    keep_temperature = chosen != plain or results[plain.name]["nll"] < baseline["nll"]
    notes = {
        "baseline": baseline,
        "candidates": results,
        "chosen": chosen.name,
        "kept_temperature": keep_temperature,
        "gain": gain,
    }
    logits = oof[chosen] if keep_temperature else fit.base_logp
    return chosen, logits, notes


def _ood(
    scaled: FloatArray, y: IntArray, splits: list[Split], n_classes: int, oof_labels: dict[str, IntArray]
) -> tuple[OodModel | None, dict[str, FloatArray], str]:
    """The site's OOD reference on every cell and, per model, out-of-fold scores under its labels."""
    scores = {name: np.zeros(len(y)) for name in oof_labels}
    try:
        for train, test in splits:
            fold = fit_ood(scaled[train], y[train], n_classes)
            for name, labels in oof_labels.items():
                scores[name][test] = fold.score(scaled[test], labels[test])
        return fit_ood(scaled, y, n_classes), scores, ""
    except ValueError as exc:
        return None, {}, f"no site OOD reference: {exc}"


def fit_profile(
    bundle: LoadedBundle,
    scaled: FloatArray,
    y: IntArray,
    patients: Sequence[str],
    *,
    site: str,
    settings: AdaptSettings | None = None,
) -> SiteProfile:
    """The site profile of ``bundle`` from bundle-scaled embeddings ``scaled`` with class indices ``y``."""
    settings = settings or AdaptSettings()
    manifest = bundle.manifest
    classes = list(manifest.classes)
    if MYELOBLAST not in classes:
        raise InvalidArgument(f"the bundle has no {MYELOBLAST} class; site adaptation guards that class")
    groups = group_ids(patients)
    splits = cv_splits(y, groups, settings.folds, settings.seed)
    chosen: dict[str, tuple[Candidate, float, FloatArray, FloatArray, dict[str, Any]]] = {}
    for name in bundle.models:
        fit = _ModelFit(bundle, name, scaled, y, splits)
        candidate, oof_logits, notes = _choose(fit, settings)
        temperature, bias, boost = fit.refit(candidate)
        if not notes["kept_temperature"]:
            temperature, bias, boost = 1.0, np.zeros(len(classes)), 0.0
        boost = max(
            boost,
            notes["candidates"][candidate.name]["myeloblast_boost"] if notes["kept_temperature"] else 0.0,
        )
        bias[fit.m] += boost
        notes["myeloblast_boost"] = boost
        notes["after"] = fix.candidate_summary(oof_logits.argmax(axis=1), y, oof_logits, fit.m)
        chosen[name] = (candidate, temperature, bias, oof_logits, notes)
    ood_model: OodModel | None = None
    ood_scores: dict[str, FloatArray] = {}
    ood_note = "the bundle has no OOD model"
    if bundle.ood is not None:
        labels = {name: entry[3].argmax(axis=1) for name, entry in chosen.items()}
        ood_model, ood_scores, ood_note = _ood(scaled, y, splits, len(classes), labels)
    models: dict[str, ModelCorrection] = {}
    summaries: dict[str, Any] = {}
    adapters: dict[str, tuple[FloatArray, FloatArray]] = {}
    for name, (candidate, temperature, bias, oof_logits, notes) in chosen.items():
        entry = bundle.models[name].entry
        abstain = entry.abstain_threshold
        if abstain > 0:
            abstain = cal.abstain_threshold(softmax(oof_logits), settings.target_coverage)
        ood_t = entry.ood_threshold if bundle.ood is not None else 0.0
        if ood_model is not None and entry.ood_threshold > 0:
            ood_t = ood_threshold(ood_scores[name], settings.ood_quantile)
        if candidate.adapter != "none" and candidate.adapter not in adapters:
            every = np.arange(len(y))
            adapters[candidate.adapter] = fix.adapter_arrays(
                candidate.adapter, *fix.balanced_stats(scaled[every], y[every])
            )
        models[name] = ModelCorrection(
            adapter=candidate.adapter,
            temperature=float(temperature),
            bias=tuple(float(b) for b in bias) if np.any(bias) else (),
            abstain_threshold=float(abstain),
            ood_threshold=float(ood_t),
        )
        summaries[name] = {
            **notes,
            "abstain_threshold": {"bundle": entry.abstain_threshold, "site": float(abstain)},
            "ood_threshold": {"bundle": entry.ood_threshold, "site": float(ood_t)},
        }
    counts = {cls: int((y == i).sum()) for i, cls in enumerate(classes)}
    return SiteProfile(
        site=site,
        bundle=BundleRef.of(manifest),
        models=models,
        adapters=adapters,
        ood=ood_model,
        summary={
            "cells": len(y),
            "counts": counts,
            "patients": int(sum(1 for p in set(patients) if p)),
            "grouped_by_patient": any(patients),
            "folds": len(splits),
            "seed": settings.seed,
            "target_coverage": settings.target_coverage,
            "min_gain": settings.min_gain,
            "ood": ood_note or "site OOD reference fitted",
            "models": summaries,
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
