"""``MODEL_CARD.md`` of a classifier bundle, written beside its manifest from the training results alone.

It carries the per-site held-out metrics, the evaluation-only sets and the leave-one-source-out table, and
says plainly what is validated and what is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemascope.training import loso_report
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


def _sources(results: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            src["name"],
            src["site"] or ", ".join(sorted(set(src["sites"].values()))),
            src["groups"],
            src["role"],
            str(src["images"]),
            str(src["patients"]) if src["patients"] else "-",
        ]
        for src in results["dataset"].get("sources", [])
    ]
    return loso_report.table(["dataset", "site(s)", "grouped by", "role", "images", "patients"], rows)


def _validated(results: Mapping[str, Any]) -> list[str]:
    sites = results["dataset"].get("training_sites", [])
    loso = results.get("loso")
    lines = [
        "## What is validated, and what is not",
        "",
        f"- **Validated**: new images from the training laboratories ({', '.join(sites)}; held-out part and "
        "per-site table above), and, by leave-one-source-out, how the same pipeline does at a laboratory it "
        "was not trained on, for each of these laboratories in turn"
        + (" (below)." if loso else " (not run for this bundle)."),
        "- **Not validated**: any other laboratory, microscope, camera, stain or cell-selection practice; "
        "images that are not single, centred white cells; the cell types outside the five classes "
        "(lymphocytes, eosinophils, promyelocytes, ... are called one of the five). A laboratory must run "
        "its own acceptance test on its own labelled cells before relying on the answers. Not for clinical "
        "use.",
        "- The OOD flag catches cells unlike the training cells of the predicted class; it does not catch a "
        "confident error on a cell that looks typical.",
        "",
    ]
    if loso:
        lines += [
            "## Leave-one-source-out",
            "",
            f"Embeddings: {loso['embeddings']}.",
            "",
            *loso_report.loso_table(loso["folds"]),
            *loso_report.table(
                ["target (logistic regression)", "value", "status"], loso_report.targets(loso["folds"])
            ),
        ]
    return lines


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
    site_rows: list[list[str]] = []
    for name, r in models.items():
        site_rows += loso_report.site_rows(r.get("referral", {}).get("test_per_site", {}), name)
    eval_rows: list[list[str]] = []
    for name, r in models.items():
        eval_rows += loso_report.site_rows(r.get("referral", {}).get("probe_per_site", {}), name)
    lines = [
        f"# Model card: classifiers on {emb['backbone']} embeddings, {len(ds.get('training_sites', []))} "
        "laboratories",
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
        f"- **Data**: {ds['images']} training images, fingerprint `{ds['fingerprint'][:16]}...`; "
        f"{ds.get('evaluation_images', 0)} evaluation-only images. {CREDITS}",
        "",
        *_sources(results),
        f"- **Split**: grouped by patient and duplicates (never on both sides), stratified by "
        f"{split.get('stratified_by', 'class')}, seed {split['seed']}: models fitted on {split['fit']} "
        f"images (+ {split.get('fit_augmented', 0)} augmented copies), temperature, abstain and OOD "
        f"thresholds on a {split['calib']}-image calibration part, tested on {split['test']}."
        + (
            " The fine-tuned backbone saw none of the calibration or test images (checked against its "
            "`backbone.json`)."
            if split.get("backbone_leakage_check")
            else ""
        ),
        f"- **Augmentation**: {augmentation}.",
        "- **Referral**: a prediction is flagged `abstain` when its calibrated confidence is below the "
        "abstain threshold (95% coverage on the calibration part) or its embedding is out of distribution: "
        "Mahalanobis distance to the predicted class (PCA of the fit part, shared Ledoit-Wolf covariance; "
        "`ood.npz`) above the calibration part's 97.5th percentile. `refer_reason` says which.",
        f"- **Reproduce**: `{results.get('command') or 'n/a'}`. Library versions are in the manifest.",
        "",
        f"## Held-out metrics ({split['test']} images of the training sites)",
        "",
        *_metrics(models),
        "Per site:",
        "",
        *loso_report.table([*loso_report.HEADER[:1], "images", *loso_report.HEADER[2:]], site_rows),
    ]
    if eval_rows:
        lines += [
            "Evaluation-only sets (never fitted on):",
            "",
            *loso_report.table(["dataset:site", *loso_report.HEADER[1:]], eval_rows),
        ]
    lines += [*_validated(results), f"Full report, cross-validation and plots: {report}.", ""]
    return "\n".join(lines)


def write_model_card(results: Mapping[str, Any], bundle_dir: Path, report_dir: Path | None = None) -> Path:
    path = bundle_dir / CARD
    path.write_text(model_card(results, report_dir), encoding="utf-8")
    return path
