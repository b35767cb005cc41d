"""``hemascope site validate``: a laboratory's acceptance test of a bundle (the work is in
:mod:`hemascope.site`). Exit 0 when every criterion passes, 1 when one fails, 2 for a usage error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hemascope.commands.addresses import address_callback
from hemascope.commands.train_cli import user_errors
from hemascope.data import REPO_ROOT
from hemascope.errors import InvalidArgument

DEFAULT_CRITERIA = REPO_ROOT / "configs" / "site" / "acceptance.yaml"


@click.group("site")
def site_group() -> None:
    """Check a model bundle on a laboratory's own labelled cells before relying on it."""


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    def point(node: dict[str, Any]) -> dict[str, Any]:
        return {k: node[k] for k in ("value", "low", "high")}

    return {
        name: {
            "accuracy": point(m["all"]["accuracy"]),
            "answered_accuracy": point(m["answered"]["accuracy"]),
            "macro_f1": m["all"]["macro_f1"],
            "referral_rate": point(m["referral"]["rate"]),
            "ece": m["calibration"]["ece"],
            "myeloblast_sensitivity": point(m["myeloblast"]["sensitivity"]),
            "myeloblast_specificity": point(m["myeloblast"]["specificity"]),
        }
        for name, m in result["models"].items()
    }


def _print_verdicts(result: dict[str, Any], err: bool) -> None:
    from hemascope.site.report import verdict_rows

    rows = [["criterion", "model", "observed", "result"], *verdict_rows(result)]
    widths = [max(len(row[i].replace("**", "")) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.replace("**", "").ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip(), err=err)


@site_group.command("validate")
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The model bundle to validate (e.g. models/bloodcells-5class).",
)
@click.option(
    "--data",
    required=True,
    multiple=True,
    metavar="[NAME=]PATH",
    help="The laboratory's labelled cells, one folder per class; repeatable. With a manifest.csv (columns "
    "file, patient) intervals are computed per patient.",
)
@click.option(
    "--criteria",
    type=click.Path(path_type=Path),
    default=None,
    help="Acceptance criteria YAML (default: configs/site/acceptance.yaml).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.md, validation.json and the figures.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Last line on stdout: one JSON object (table to stderr)."
)
@click.option(
    "--address",
    default=None,
    callback=address_callback(50051),
    help="Embed through a feature service at host:port (else in-process).",
)
@click.option(
    "--replicates",
    type=click.IntRange(min=100),
    default=1000,
    show_default=True,
    help="Bootstrap replicates.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--profile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A site profile (hemascope site adapt) to validate the bundle with, as the classifier applies it.",
)
@user_errors
def validate_command(
    bundle: Path,
    data: tuple[str, ...],
    criteria: Path | None,
    out: Path,
    as_json: bool,
    address: str | None,
    replicates: int,
    seed: int,
    profile: Path | None,
) -> None:
    """Score every model of a bundle on a laboratory's own labelled cells, with 95% intervals, and judge the
    acceptance criteria: exit 0 when all pass, 1 when any fails, 2 for a usage error."""
    from hemascope.site.criteria import load_criteria
    from hemascope.site.report import render_report
    from hemascope.site.validate import ValidationConfig, run_validation
    from hemascope.training.sources import spec_from_option

    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} is a file: give a folder")
    config = ValidationConfig(
        bundle=bundle,
        specs=[spec_from_option(option) for option in data],
        criteria=load_criteria(criteria or DEFAULT_CRITERIA),
        address=address,
        replicates=replicates,
        seed=seed,
        progress=not as_json,
        profile=profile,
    )
    result = run_validation(config)
    report = render_report(result, out)
    _print_verdicts(result, err=as_json)
    verdict = "PASSED" if result["passed"] else "FAILED"
    click.echo(f"verdict: {verdict}; report: {report}", err=as_json)
    if as_json:
        line = {
            "passed": result["passed"],
            "report": str(report),
            "validation": str(out / "validation.json"),
            "grouped_by_patient": result["intervals"]["grouped_by_patient"],
            "verdicts": result["criteria"]["verdicts"],
            "models": _summary(result),
        }
        click.echo(json.dumps(line))
    sys.exit(0 if result["passed"] else 1)


def _register() -> None:
    from hemascope.commands.site_adapt_cli import adapt_command, curve_command

    site_group.add_command(adapt_command)
    site_group.add_command(curve_command)


_register()
