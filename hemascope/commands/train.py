"""``hemascope train classifiers`` and ``hemascope evaluate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def run_train(
    data: Path,
    out: Path,
    *,
    backbone: str | None,
    address: str | None,
    models: list[str],
    cv_folds: int,
    report: Path | None,
    augment: int = 0,
    probe: Path | None = None,
    preprocessing: str | None = None,
) -> None:
    from hemascope.training.audit import audit_dataset
    from hemascope.training.card import write_model_card
    from hemascope.training.report import render_report
    from hemascope.training.train import TrainConfig, train_classifiers

    report_dir = report or out.parent / f"{out.name}-report"
    report_dir.mkdir(parents=True, exist_ok=True)
    click.echo("auditing the dataset (duplicates, source-shortcut probe)", err=True)
    audit = audit_dataset(data)
    (report_dir / "audit.md").write_text(audit.to_markdown())
    config = TrainConfig(
        data=data,
        out=out,
        backbone=backbone,
        address=address,
        models=models,
        cv_folds=cv_folds,
        log=lambda line: click.echo(line, err=True),
        command=" ".join(["hemascope", *sys.argv[1:]]),
        duplicates=audit.duplicates,
        augment=augment,
        probe=probe,
        preprocessing=preprocessing,
    )
    results = train_classifiers(config)
    (report_dir / "results.json").write_text(json.dumps(results, indent=1))
    markdown = render_report(results, report_dir, audit=_audit_summary(audit.to_json()))
    card = write_model_card(results, out, report_dir)
    click.echo(f"bundle: {out}\nreport: {markdown}\nmodel card: {card}")


def _audit_summary(audit: dict[str, Any]) -> dict[str, Any]:
    """The audit figures the training report quotes (the full audit is written beside it as audit.md)."""
    probe = audit.get("shortcut") or {}
    dups = audit["duplicates"]
    return {
        "shortcut": {k: probe.get(k) for k in ("accuracy_mean", "accuracy_std", "chance", "warning")},
        "byte-identical groups": len(dups["exact_groups"]),
        "near-duplicate pairs": len(dups["near_pairs"]),
        "duplicate groups straddling splits": len(dups["straddling_splits"]),
        "full audit": "audit.md",
    }


COLUMNS = (
    "acc: accuracy; macroF1: F1 averaged over the bundle's classes (n/a when the data lacks some); AUC: "
    "one-vs-rest ROC-AUC; mal.sens / mal.spec: sensitivity and specificity of the malignant call; coverage: "
    "share of cells answered (not referred) at the bundle's confidence threshold; cov.ref: share answered "
    "when out-of-distribution referral is added"
)


def _missing_classes(metrics: dict[str, Any]) -> list[str]:
    """The bundle's classes without a single image in the data (macro averages are meaningless then)."""
    return [cls for cls, row in metrics["per_class"].items() if row["support"] == 0]


def _print_table(result: dict[str, Any], err: bool = False) -> None:
    def echo(line: str) -> None:
        click.echo(line, err=err)

    data = result["data"]
    echo(f"bundle {result['bundle']['version']} on {data['root']}: {_count(data['images'], 'image')}")
    for folder in data["unknown_folders"]:
        echo(f"  not a known class, skipped: {folder}")
    echo(
        f"{'model':<22}{'acc':>7}{'macroF1':>9}{'AUC':>7}{'mal.sens':>10}{'mal.spec':>10}{'coverage':>10}"
        f"{'cov.ref':>9}"
    )
    missing: list[str] = []
    for name, m in result["models"].items():
        missing = _missing_classes(m)
        f1 = "n/a" if missing else f"{m['macro_f1']:.3f}"
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        sens, spec = m["malignant"]["sensitivity"], m["malignant"]["specificity"]
        echo(
            f"{name:<22}{m['accuracy']:7.3f}{f1:>9}{auc:>7}"
            f"{'n/a' if sens is None else f'{sens:.3f}':>10}{'n/a' if spec is None else f'{spec:.3f}':>10}"
            f"{m['abstain']['coverage']:10.3f}{m['referral']['coverage']:9.3f}"
        )
    if missing:
        echo(f"no images of {', '.join(missing)}: macro-F1 is not shown (it would count those classes as 0)")
    echo(COLUMNS)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_probe(result: dict[str, Any], err: bool = False) -> None:
    probe = result["probe"]
    click.echo(f"cross-source probe {probe['root']}: {_count(probe['images'], 'image')}", err=err)
    click.echo(f"{'model':<22}{'acc':>7}{'referred':>10}{'err.ref':>9}{'ood':>7}  called", err=err)
    for name, m in probe["models"].items():
        called: dict[str, int] = {}
        for row in m["called"].values():
            for cls, n in row.items():
                called[cls] = called.get(cls, 0) + n
        calls = ", ".join(f"{c} {n}" for c, n in called.items() if n)
        errors = "n/a" if m["errors_referred"] is None else f"{m['errors_referred']:.3f}"
        click.echo(
            f"{name:<22}{m['accuracy']:7.3f}{m['referred']:10.3f}{errors:>9}"
            f"{m['out_of_distribution']:7.3f}  {calls}",
            err=err,
        )
    click.echo(
        "referred: share of probe cells referred; err.ref: share of the errors that were referred; ood: "
        "share flagged out of distribution; called: what the models called the probe's cells",
        err=err,
    )


def run_evaluate(
    bundle: Path, data: Path, *, address: str | None, as_json: bool, probe: Path | None = None
) -> None:
    from hemascope.training.evaluate import evaluate_bundle, summary_line

    try:
        result = evaluate_bundle(bundle, data, address=address, progress=not as_json, probe=probe)
    except FileNotFoundError:
        classes = json.loads((bundle / "manifest.json").read_text())["classes"]
        raise click.BadParameter(
            f"{data} holds no images of the bundle's classes: give a folder with one subfolder per class "
            f"({', '.join(classes)}), each holding images (train/, val/ and test/ levels are allowed)",
            param_hint="--data",
        ) from None
    _print_table(result, err=as_json)  # with --json, stdout holds the JSON only
    if probe is not None:
        _print_probe(result, err=as_json)
    if as_json:
        line = {"models": summary_line(result), "data": result["data"]}
        if probe is not None:
            line["probe"] = {"root": result["probe"]["root"], "images": result["probe"]["images"]}
        click.echo(json.dumps(line))
