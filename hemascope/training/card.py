"""``MODEL_CARD.md`` of a classifier bundle, written beside its manifest from the training results alone.

It carries the same-source metrics and, next to them, the cross-source probe: what cells of a known class
from the other scanner are called, and how much of that error the referral catches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemascope.training import probe_report
from hemascope.training.report import CREDITS

CARD = "MODEL_CARD.md"


def _f(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _metrics(models: Mapping[str, Any]) -> list[str]:
    header = (
        "| model | accuracy | macro F1 | ROC-AUC | myeloblast sens. | myeloblast spec. | ECE (calibrated) "
    )
    header += "| abstain threshold | OOD threshold | coverage, referral on | fit s |"
    lines = [header, "|" + "---|" * 11]
    for name, r in models.items():
        t, referral = r["test"], r.get("referral", {})
        cells = [
            name,
            _f(t["accuracy"]),
            _f(t["macro_f1"]),
            _f(t["roc_auc"]),
            _f(t["malignant"]["sensitivity"]),
            _f(t["malignant"]["specificity"]),
            _f(r["calibration"]["after"]["ece"]),
            _f(r["abstain"]["threshold"], 3),
            _f(referral.get("ood_threshold"), 2),
            _f(referral.get("test", {}).get("coverage"), 3),
            _f(r["fit_seconds"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def model_card(results: Mapping[str, Any], report_dir: Path | None = None) -> str:
    ds, emb, split = results["dataset"], results["embedding"], results["split"]
    aug = results.get("augmentation") or {}
    models: Mapping[str, Any] = results["models"]
    augmentation = (
        f"{aug['copies']} augmented copies of each fit image (`{aug['version']}`, seed {aug['seed']}: "
        "HED stain, colour, scale, rotation and flip jitter), fit part only"
        if aug.get("copies")
        else "none"
    )
    report = f"`{report_dir / 'report.md'}`" if report_dir else "the training report"
    lines = [
        f"# Model card: {Path(ds['root']).name} classifiers on {emb['backbone']} embeddings",
        "",
        f"Bundle version `{results['bundle']['version']}` (this folder). Files are listed with their SHA-256 "
        "in `manifest.json`; `hemascope serve classifier --bundle <this folder>` serves them, "
        "`hemascope evaluate` scores them.",
        "",
        f"- **What**: {', '.join(models)} on {emb['dimension']}-d {emb['backbone']} embeddings (weights "
        f"SHA-256 `{emb['weights_hash'][:16]}...`, preprocessing "
        f"`{emb.get('preprocessing_option', 'n/a')}` = `{emb['preprocessing']}`), z-scored "
        "with the bundled scaler.",
        f"- **Classes**: {', '.join(results['classes'])}; "
        f"malignant: {', '.join(results['malignant_classes'])}.",
        f"- **Data**: `{ds['root']}` ({ds['images']} images), fingerprint `{ds['fingerprint'][:16]}...`. "
        f"{CREDITS}",
        f"- **Split**: stratified, grouped (duplicates never straddle), seed {split['seed']}: models fitted "
        f"on {split['fit']} images (+ {split.get('fit_augmented', 0)} augmented copies), temperature, "
        f"abstain and OOD thresholds on a {split['calib']}-image calibration part, tested "
        f"on {split['test']}.",
        f"- **Augmentation**: {augmentation}.",
        "- **Referral**: a prediction is flagged `abstain` when its calibrated confidence is below the "
        "abstain threshold (95% coverage on the calibration part) or its embedding is out of distribution: "
        "Mahalanobis distance to the predicted class (PCA of the fit part, shared Ledoit-Wolf covariance; "
        "`ood.npz`) above the calibration part's 97.5th percentile. `refer_reason` says which.",
        f"- **Reproduce**: `{results.get('command') or 'n/a'}`. Library versions are in the manifest.",
        "",
        f"## Held-out metrics ({split['test']} images, same two sources)",
        "",
        *_metrics(models),
        *probe_report.section(results),
        f"Full report, cross-validation and plots: {report}.",
        "",
        "## Limits: read before use",
        "",
        "- **Source shortcut.** Basophils, erythroblasts and monocytes come from one scanner (Barcelona) and "
        "myeloblasts and neutrophils from another (Munich). The held-out metrics share those sources and "
        "overstate what the models know about cells; the cross-source probe above is the check. "
        "Not for clinical use.",
        "- The OOD flag catches cells unlike the training cells of the predicted class; it does not catch a "
        "confident error on a cell that looks typical.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(results: Mapping[str, Any], bundle_dir: Path, report_dir: Path | None = None) -> Path:
    path = bundle_dir / CARD
    path.write_text(model_card(results, report_dir), encoding="utf-8")
    return path
