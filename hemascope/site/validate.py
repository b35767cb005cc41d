"""``hemascope site validate``: a laboratory's acceptance test of a model bundle on its own labelled cells.

The cells are embedded with the bundle's own backbone and preprocessing and scored by every model exactly
as ``hemascope evaluate`` does (:mod:`hemascope.training.evaluate`), with the referral flags the classifier
service sets; every figure gets a 95% interval (:mod:`hemascope.site.stats`), grouped by patient when the
data names patients; the acceptance criteria (:mod:`hemascope.site.criteria`) then pass or fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hemascope.bundle import load_bundle
from hemascope.site.criteria import Criteria, evaluate_criteria
from hemascope.site.metrics import model_metrics
from hemascope.site.profile import SiteProfile
from hemascope.site.stats import LEVEL, Resampler
from hemascope.training.evaluate import embed_scan, referral_flags, trained_on
from hemascope.training.sources import DatasetSpec, SourcedSet, SourceSpecError, scan_sources

DEFAULT_REPLICATES = 1000


@dataclass(frozen=True)
class ValidationConfig:
    bundle: Path
    specs: Sequence[DatasetSpec]
    criteria: Criteria
    address: str | None = None
    replicates: int = DEFAULT_REPLICATES
    seed: int = 0
    progress: bool = True
    #: a site profile (``hemascope site adapt``) to validate the bundle with, as the classifier applies it
    profile: Path | None = None


def check_folders(scan: SourcedSet, classes: Sequence[str]) -> None:
    if scan.unknown_folders:
        names = ", ".join(str(p) for p in scan.unknown_folders[:5])
        more = f" (and {len(scan.unknown_folders) - 5} more)" if len(scan.unknown_folders) > 5 else ""
        raise SourceSpecError(
            f"folders that are not classes of the bundle: {names}{more}. The bundle knows "
            f"{', '.join(classes)}; move other cell types out of the dataset (or rename misspelt folders)"
        )


def _data_summary(
    scan: SourcedSet, classes: Sequence[str], resampler: Resampler, overlap: list[str]
) -> dict[str, Any]:
    counts = Counter(r.label for r in scan.records)
    patients = {r.patient for r in scan.records if r.patient}
    per_patient = Counter(r.patient for r in scan.records if r.patient)
    return {
        "datasets": scan.describe(),
        "cells": len(scan.records),
        "counts": {cls: counts.get(cls, 0) for cls in classes},
        "grouped_by_patient": resampler.grouped,
        "patients": len(patients) if resampler.grouped else None,
        "cells_per_patient_max": max(per_patient.values()) if per_patient else None,
        "ungrouped_cells": sum(1 for r in scan.records if not r.patient) if resampler.grouped else None,
        "trained_on": overlap,
    }


def run_validation(config: ValidationConfig) -> dict[str, Any]:
    """Scores the bundle on the data and judges the criteria; the result is what ``validation.json`` holds.

    Raises :class:`~hemascope.errors.HemascopeError` subclasses for the user's mistakes (bad bundle,
    folders, manifest or criteria) before anything is embedded where it can."""
    bundle = load_bundle(config.bundle)
    manifest = bundle.manifest
    classes = tuple(manifest.classes)
    criteria = config.criteria
    chosen = criteria.chosen_models({name: m.entry.kind for name, m in bundle.models.items()})
    profile = SiteProfile.load(config.profile) if config.profile is not None else None
    if profile is not None:
        profile.check_bundle(manifest, config.profile.name if config.profile else "")
    criteria.check_classes(classes)
    scan = scan_sources(config.specs, classes)
    check_folders(scan, classes)
    resampler = Resampler.create([r.patient for r in scan.records], config.replicates, config.seed)
    y, scaled = embed_scan(bundle, scan, address=config.address, progress=config.progress)
    malignant = [classes.index(c) for c in manifest.malignant_classes]
    models: dict[str, Any] = {}
    for name, model in bundle.models.items():
        if profile is None:
            proba = model.proba(scaled)
            flags = referral_flags(bundle, name, scaled, proba)
        else:
            proba = profile.proba(bundle, name, scaled)[1]
            flags = profile.referral(bundle, name, scaled, proba)
        metrics = model_metrics(y, proba, classes, malignant, flags, resampler, criteria.target_sensitivity)
        metrics["kind"] = model.entry.kind
        metrics["ood_available"] = bundle.ood is not None and model.entry.ood_threshold > 0
        metrics["abstain_threshold"] = (
            model.entry.abstain_threshold if profile is None else profile.models[name].abstain_threshold
        )
        models[name] = metrics
    data = _data_summary(scan, classes, resampler, trained_on(bundle, config.specs))
    verdicts = evaluate_criteria(criteria, data, {n: models[n] for n in chosen}, classes)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": {
            "path": str(config.bundle),
            "version": manifest.bundle_version,
            "backbone": manifest.backbone,
            "weights_hash": manifest.weights_hash,
            "preprocessing": manifest.preprocessing,
            "classes": list(classes),
            "malignant_classes": list(manifest.malignant_classes),
        },
        "data": data,
        "site_profile": None
        if profile is None or config.profile is None
        else {"path": str(config.profile), "site": profile.site, "created": profile.created},
        "intervals": {
            "level": LEVEL,
            "grouped_by_patient": resampler.grouped,
            "clusters": resampler.clusters,
            "replicates": resampler.replicates,
            "seed": resampler.seed,
        },
        "criteria": {
            "source": criteria.source,
            "models": chosen,
            "target_sensitivity": criteria.target_sensitivity,
            "verdicts": verdicts,
        },
        "passed": all(v["passed"] for v in verdicts),
        "models": models,
    }
