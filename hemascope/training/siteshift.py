"""``hemascope study site-shift``: does the system notice, by itself, that it is at a laboratory it was not
trained on?

Leave-one-source-out: each training laboratory in turn plays the new site. The other laboratories'
images are split (grouped, stratified by class and site) into FIT (the acquisition reference and the
classifier), CALIBRATION (thresholds) and an in-distribution TEST part. For every candidate score the study
reports the AUROC of held-out-site images against the in-distribution test images:

- ``acquisition``: the acquisition fingerprint's distance to the reference of the class the classifier
  answered (:mod:`hemascope.bundle.site`), what the services compute;
- ``acquisition (true class)``: the same against the true class, an upper bound for reference only;
- ``embedding``: the bundle's out-of-distribution score (Mahalanobis distance in embedding space);
- ``combined``: the sum of both, each standardised on the calibration part.

Then what they are for: on the held-out site, how many of the classifier's errors each referral rule
sends for review and how many images it still answers; and the drift rule (:mod:`hemascope.site.drift`)
replayed over streams of images sent the way a laboratory sends them (patient by patient): how many
images until a held-out laboratory's caller is flagged, and whether any stream of a training
laboratory's unseen images is flagged within :data:`STREAM_LENGTH` images.

The classifier is logistic regression on the frozen ImageNet backbone's embeddings, so no part of the
pipeline has seen the held-out laboratory (a fine-tuned backbone would need one fine-tuning per fold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from hemascope.bundle import apply_temperature
from hemascope.datasets import CLASSES
from hemascope.site.drift import DriftRule, DriftWindow
from hemascope.training import calibration as cal
from hemascope.training.groups import strata
from hemascope.training.models import MODELS, fit_model
from hemascope.training.multisource import SourcedData
from hemascope.training.ood import DEFAULT_COMPONENTS, DEFAULT_QUANTILE, fit_ood, ood_threshold
from hemascope.training.site_reference import fit_site_reference
from hemascope.training.split import grouped_folds

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
STREAM_LENGTH = 1000
CLASSIFIER = "logistic_regression"


@dataclass(frozen=True)
class ShiftParts:
    held_out: str
    fit: IntArray
    calib: IntArray
    unseen: IntArray  # in-distribution test: training laboratories' images never fitted on
    new_site: IntArray


@dataclass
class SiteShiftConfig:
    rule: DriftRule = field(default_factory=DriftRule)
    streams: int = 20
    seed: int = 50
    log: Callable[[str], None] = print


def shift_parts(sourced: SourcedData, seed: int = 50) -> list[ShiftParts]:
    """One fold per training site: the rest split 80/20 (unseen test) and the 80 % into FIT and 10 % CALIB."""
    sites = np.asarray(sourced.sites)
    training = sourced.training
    out = []
    for site in dict.fromkeys(sites[training].tolist()):
        rest = np.flatnonzero(training & (sites != site)).astype(np.int64)
        keep_rel, unseen_rel = next(
            grouped_folds(strata(sourced.y[rest], list(sites[rest])), sourced.groups[rest], 5, seed)
        )
        keep = rest[keep_rel]
        keep_strata = strata(sourced.y[keep], list(sites[keep]))
        # a tenth for calibration, or as large a share as the rarest (class, site) allows on small sets
        k = int(max(2, min(10, np.bincount(keep_strata)[np.unique(keep_strata)].min())))
        fit_rel, calib_rel = next(grouped_folds(keep_strata, sourced.groups[keep], k, seed))
        new_site = np.flatnonzero(sites == site).astype(np.int64)
        out.append(ShiftParts(site, keep[fit_rel], keep[calib_rel], rest[unseen_rel], new_site))
    return out


def _auroc(negative: FloatArray, positive: FloatArray) -> float | None:
    if len(negative) == 0 or len(positive) == 0:
        return None
    labels = np.r_[np.zeros(len(negative)), np.ones(len(positive))]
    return float(roc_auc_score(labels, np.r_[negative, positive]))


def _full_proba(estimator: Any, x: FloatArray, n_classes: int) -> FloatArray:
    """Probabilities over every class (a class absent from a small fold's fit part gets 0)."""
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(estimator.classes_, dtype=np.intp)] = estimator.predict_proba(x)
    return out


def _robust_z(scores: FloatArray, calib: FloatArray) -> FloatArray:
    q75, q50, q25 = np.percentile(calib, [75, 50, 25])
    out: FloatArray = (scores - q50) / max(q75 - q25, 1e-9)
    return out


def _stream_orders(groups: IntArray, rows: IntArray, length: int, rng: np.random.Generator) -> IntArray:
    """Rows sent patient by patient (groups in random order, cells in random order within a group), cycled
    with a fresh group order until ``length`` rows are sent (``length`` 0: every row once)."""
    by_group: dict[int, list[int]] = {}
    for row in rows:
        by_group.setdefault(int(groups[row]), []).append(int(row))
    keys = list(by_group)
    sent: list[int] = []
    while not sent or (length and len(sent) < length):
        for g in rng.permutation(len(keys)):
            cells = by_group[keys[int(g)]]
            sent.extend(cells[int(i)] for i in rng.permutation(len(cells)))
        if not length:
            break
    return np.asarray(sent[:length] if length else sent, dtype=np.int64)


def _first_flag(bits: NDArray[np.bool_], rule: DriftRule) -> int | None:
    window = DriftWindow(rule)
    for i, bit in enumerate(bits):
        if window.add(bool(bit)).value == "unvalidated site":
            return i + 1
    return None


def _referral(
    errors: NDArray[np.bool_], rules: dict[str, NDArray[np.bool_]]
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, referred in rules.items():
        out[name] = {
            "errors_referred": float(referred[errors].mean()) if errors.any() else None,
            "answered": float(1 - referred.mean()),
            "error_rate_answered": float(errors[~referred].mean()) if (~referred).any() else None,
        }
    return out


def run_fold(
    sourced: SourcedData,
    parts: ShiftParts,
    fingerprints: NDArray[np.floating[Any]],
    embeddings: NDArray[np.floating[Any]],
    cfg: SiteShiftConfig,
) -> dict[str, Any]:
    y = sourced.y
    n_classes = len(CLASSES)
    reference = fit_site_reference(
        fingerprints[parts.fit], y[parts.fit], fingerprints[parts.calib], y[parts.calib], n_classes
    )
    scaler = StandardScaler().fit(embeddings[parts.fit])
    x = {k: scaler.transform(embeddings[getattr(parts, k)]) for k in ("fit", "calib", "unseen", "new_site")}
    fitted = fit_model(MODELS[CLASSIFIER], x["fit"], y[parts.fit], n_classes)
    raw = {k: _full_proba(fitted.estimator, v, n_classes) for k, v in x.items()}
    temperature = cal.fit_temperature(y[parts.calib], raw["calib"])
    proba = {k: apply_temperature(p, temperature) for k, p in raw.items()}
    answer = {k: p.argmax(axis=1) for k, p in proba.items()}
    ood = fit_ood(x["fit"], y[parts.fit], n_classes, components=DEFAULT_COMPONENTS, seed=cfg.seed)
    ood_scores = {k: ood.score(x[k], answer[k]) for k in x}
    acq = {k: reference.score(fingerprints[getattr(parts, k)], answer[k]) for k in x}
    acq_true = {k: reference.score(fingerprints[getattr(parts, k)], y[getattr(parts, k)]) for k in x}
    combined = {k: _robust_z(acq[k], acq["calib"]) + _robust_z(ood_scores[k], ood_scores["calib"]) for k in x}
    candidates = {
        "acquisition": acq,
        "acquisition (true class)": acq_true,
        "embedding": ood_scores,
        "combined": combined,
    }
    auroc = {name: _auroc(s["unseen"], s["new_site"]) for name, s in candidates.items()}
    by_class = {
        CLASSES[c]: _auroc(acq["unseen"][answer["unseen"] == c], acq["new_site"][answer["new_site"] == c])
        for c in range(n_classes)
    }

    abstain = cal.abstain_threshold(proba["calib"], 0.95)
    ood_thr = ood_threshold(ood_scores["calib"], DEFAULT_QUANTILE)
    atypical = {k: reference.atypical(acq[k], answer[k]) for k in x}
    new = "new_site"
    low = proba[new].max(axis=1) < abstain
    out_of_dist = ood_scores[new] > ood_thr
    errors = answer[new] != y[parts.new_site]
    referral = _referral(
        errors,
        {
            "low confidence": low,
            "low confidence or embedding OOD": low | out_of_dist,
            "atypical acquisition": atypical[new],
            "low confidence, OOD or atypical acquisition": low | out_of_dist | atypical[new],
        },
    )

    rng = np.random.default_rng(cfg.seed)
    bits_of = np.zeros(len(y), dtype=np.bool_)
    bits_of[parts.unseen] = atypical["unseen"]
    bits_of[parts.new_site] = atypical[new]
    to_flag = [
        _first_flag(bits_of[_stream_orders(sourced.groups, parts.new_site, 0, rng)], cfg.rule)
        for _ in range(cfg.streams)
    ]
    sites = np.asarray(sourced.sites)
    false_flags: dict[str, int] = {}
    for site in dict.fromkeys(sites[parts.unseen].tolist()):
        rows = parts.unseen[sites[parts.unseen] == site]
        streams = (_stream_orders(sourced.groups, rows, STREAM_LENGTH, rng) for _ in range(cfg.streams))
        false_flags[site] = sum(_first_flag(bits_of[order], cfg.rule) is not None for order in streams)
    flagged = [n for n in to_flag if n is not None]
    return {
        "held_out": parts.held_out,
        "sizes": {k: len(getattr(parts, k)) for k in ("fit", "calib", "unseen", "new_site")},
        "auroc": auroc,
        "auroc_by_answered_class": by_class,
        "atypical_rate": {k: float(atypical[k].mean()) for k in ("unseen", new)},
        "classifier": {
            "accuracy_new_site": float(1 - errors.mean()),
            "accuracy_unseen": float((answer["unseen"] == y[parts.unseen]).mean()),
        },
        "referral": referral,
        "drift": {
            "streams": cfg.streams,
            "flagged_streams": len(flagged),
            "images_to_flag_median": float(np.median(flagged)) if flagged else None,
            "images_to_flag_max": max(flagged) if flagged else None,
            "training_site_streams_flagged": false_flags,
            "stream_length": STREAM_LENGTH,
        },
    }


def run_site_shift(
    sourced: SourcedData,
    fingerprints: NDArray[np.floating[Any]],
    embeddings: NDArray[np.floating[Any]],
    cfg: SiteShiftConfig,
    folds: Sequence[ShiftParts] | None = None,
) -> dict[str, Any]:
    """Every fold of :func:`shift_parts` (or ``folds``); the summary says which targets each score meets."""
    results = []
    for parts in folds if folds is not None else shift_parts(sourced, cfg.seed):
        cfg.log(f"site shift: {parts.held_out} held out")
        results.append(run_fold(sourced, parts, fingerprints, embeddings, cfg))
    rule = cfg.rule
    return {
        "classifier": f"{CLASSIFIER} on the frozen ImageNet backbone's embeddings",
        "drift_rule": {
            "window": rule.window,
            "min_images": rule.min_images,
            "flag_share": rule.flag_share,
            "clear_share": rule.clear_share,
        },
        "folds": results,
    }


def write_json(result: dict[str, Any], out: Path) -> Path:
    import json

    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path
