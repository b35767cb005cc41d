"""``hemascope train classifiers`` and ``hemascope evaluate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hemascope.training.sources import DatasetSpec


def run_train(
    sources: list[DatasetSpec],
    out: Path,
    *,
    backbone: str | None,
    address: str | None,
    models: list[str],
    cv_folds: int,
    report: Path | None,
    augment: int = 0,
    preprocessing: str | None = None,
    loso: bool = True,
    loso_models: list[str] | None = None,
) -> None:
    from hemascope.training.audit import audit_dataset
    from hemascope.training.card import write_model_card
    from hemascope.training.report import render_report
    from hemascope.training.train import TrainConfig, train_classifiers

    report_dir = report or out.parent / f"{out.name}-report"
    report_dir.mkdir(parents=True, exist_ok=True)
    audits: dict[str, Any] = {}
    for spec in sources:
        if spec.role != "train":
            continue
        click.echo(f"auditing {spec.name} (duplicates, source-shortcut probe)", err=True)
        audit = audit_dataset(spec.root)
        (report_dir / f"audit-{spec.name}.md").write_text(audit.to_markdown())
        audits[spec.name] = _audit_summary(audit.to_json(), f"audit-{spec.name}.md")
    config = TrainConfig(
        sources=sources,
        out=out,
        backbone=backbone,
        address=address,
        models=models,
        cv_folds=cv_folds,
        log=lambda line: click.echo(line, err=True),
        command=" ".join(["hemascope", *sys.argv[1:]]),
        augment=augment,
        preprocessing=preprocessing,
        loso=loso,
        loso_models=loso_models,
    )
    results = train_classifiers(config)
    (report_dir / "results.json").write_text(json.dumps(results, indent=1))
    markdown = render_report(results, report_dir, audits=audits)
    card = write_model_card(results, out, report_dir)
    click.echo(f"bundle: {out}\nreport: {markdown}\nmodel card: {card}")


def _audit_summary(audit: dict[str, Any], file: str) -> dict[str, Any]:
    """The audit figures the training report quotes (the full audit is written beside it as audit.md)."""
    probe = audit.get("shortcut") or {}
    dups = audit["duplicates"]
    return {
        "shortcut": {k: probe.get(k) for k in ("accuracy_mean", "accuracy_std", "chance", "warning")},
        "byte-identical groups": len(dups["exact_groups"]),
        "near-duplicate pairs": len(dups["near_pairs"]),
        "duplicate groups straddling splits": len(dups["straddling_splits"]),
        "full audit": file,
    }


COLUMNS = (
    "acc: accuracy; macroF1: F1 averaged over the bundle's classes (n/a when the data lacks some); AUC: "
    "one-vs-rest ROC-AUC; mal.sens / mal.spec: sensitivity and specificity of the malignant call; coverage: "
    "share of cells answered (not referred) at the bundle's confidence threshold; cov.ref: share answered "
    "when out-of-distribution referral is added"
)
SITE_COLUMNS = (
    "per site, macroF1 is over the classes that site has; mye.sens / mye.spec: myeloblast sensitivity and "
    "specificity of the argmax call; referred: share referred (low confidence or out of distribution)"
)


def _missing_classes(metrics: dict[str, Any]) -> list[str]:
    """The bundle's classes without a single image in the data (macro averages are meaningless then)."""
    return [cls for cls, row in metrics["per_class"].items() if row["support"] == 0]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_table(result: dict[str, Any], err: bool = False) -> None:
    def echo(line: str) -> None:
        click.echo(line, err=err)

    data = result["data"]
    echo(f"bundle {result['bundle']['version']} on {data['root']}: {_count(data['images'], 'image')}")
    for folder in data["unknown_folders"]:
        echo(f"  not a known class, skipped: {folder}")
    for name in data["trained_on"]:
        echo(f"  note: the bundle was trained on {name}: its scores there are not held-out scores")
    echo(
        f"{'model':<22}{'acc':>7}{'macroF1':>9}{'AUC':>7}{'mal.sens':>10}{'mal.spec':>10}{'coverage':>10}"
        f"{'cov.ref':>9}"
    )
    missing: list[str] = []
    for name, m in result["models"].items():
        missing = _missing_classes(m)
        auc = "  n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        f1 = "n/a" if missing else f"{m['macro_f1']:.3f}"
        sens, spec = m["malignant"]["sensitivity"], m["malignant"]["specificity"]
        echo(
            f"{name:<22}{m['accuracy']:7.3f}{f1:>9}{auc:>7}"
            f"{'n/a' if sens is None else f'{sens:.3f}':>10}{'n/a' if spec is None else f'{spec:.3f}':>10}"
            f"{m['abstain']['coverage']:10.3f}{m['referral']['coverage']:9.3f}"
        )
    if missing:
        echo(f"no images of {', '.join(missing)}: macro-F1 is not shown (it would count those classes as 0)")
    echo(COLUMNS)


def _print_sites(result: dict[str, Any], err: bool = False) -> None:
    """Per site: macro-F1 over the classes the site has, the myeloblast view and the referral rate."""
    click.echo(
        f"{'site':<24}{'model':<22}{'n':>6}{'acc':>7}{'macroF1':>9}{'mye.sens':>10}{'mye.spec':>10}"
        f"{'referred':>10}",
        err=err,
    )
    for name, sites in result["per_site"].items():
        for site, m in sites.items():
            click.echo(
                f"{site:<24}{name:<22}{m['n']:>6}{m['accuracy']:7.3f}{m['macro_f1']:9.3f}"
                f"{_fmt(m['myeloblast_sensitivity']):>10}{_fmt(m['myeloblast_specificity']):>10}"
                f"{_fmt(m.get('referred')):>10}",
                err=err,
            )
    click.echo(SITE_COLUMNS, err=err)


def run_evaluate(bundle: Path, specs: list[DatasetSpec], *, address: str | None, as_json: bool) -> None:
    from hemascope.training.evaluate import evaluate_bundle, summary_line

    result = evaluate_bundle(bundle, specs, address=address, progress=not as_json)
    _print_table(result, err=as_json)  # with --json, stdout holds the JSON only
    _print_sites(result, err=as_json)
    if as_json:
        click.echo(json.dumps({"models": summary_line(result), "data": result["data"]}))


def run_evaluate_batch(out: Path, *, as_json: bool) -> None:
    from hemascope.training.batch_eval import evaluate_batch

    result = evaluate_batch(out)

    def echo(line: str) -> None:
        click.echo(line, err=as_json)

    echo(f"batch {out}: {result['labelled']} labelled images ({result['unlabelled']} not in a class folder)")
    echo(f"{'model':<22}{'acc':>7}{'macroF1':>9}{'mal.sens':>10}{'mal.spec':>10}{'referred':>10}")
    for name, m in [*result["models"].items(), ("consensus", result["consensus"])]:
        sens, spec = m["myeloblast_sensitivity"], m["myeloblast_specificity"]
        echo(
            f"{name:<22}{m['accuracy']:7.3f}{m['macro_f1']:9.3f}"
            f"{'n/a' if sens is None else f'{sens:.3f}':>10}{'n/a' if spec is None else f'{spec:.3f}':>10}"
            f"{m['referred']:10.3f}"
        )
    if as_json:
        click.echo(json.dumps(result))
