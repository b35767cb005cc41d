"""``hemascope study robustness``: preprocessing x augmentation against the source shortcut."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def run_study(
    data: Path,
    probe: Path,
    out: Path,
    *,
    cache: Path | None,
    options: list[str] | None,
    augment: int,
    augment_top: int | None,
    backbone: str | None,
    min_f1: float,
) -> None:
    from hemascope.training.sets import preprocessing_options
    from hemascope.training.study import StudyConfig
    from hemascope.training.study import run_study as run

    unknown = sorted(set(options or ()) - set(preprocessing_options()))
    if unknown:
        known = ", ".join(preprocessing_options())
        raise click.BadParameter(
            f"unknown preprocessing options {unknown}; known: {known}", param_hint="--options"
        )

    config = StudyConfig(
        data=data,
        probe=probe,
        out=out,
        cache=cache or Path.home() / ".cache" / "hemascope" / "study",
        options=options,
        augment=augment,
        augment_top=augment_top,
        backbone=backbone,
        min_f1=min_f1,
        log=lambda line: click.echo(line, err=True),
        command=" ".join(["hemascope", *sys.argv[1:]]),
    )
    study = run(config)
    chosen = study["chosen"]
    click.echo(f"study: {out / 'study.md'}")
    if chosen is None:
        click.echo("chosen: none (no option met the rule); keep the plain pipeline")
    else:
        row = next(
            r for r in study["rows"] if (r["option"], r["augment"]) == (chosen["option"], chosen["augment"])
        )
        click.echo(
            f"chosen: preprocessing {chosen['option']}, augmentation "
            f"{'off' if not chosen['augment'] else str(chosen['augment']) + 'x'} (probe accuracy "
            f"{row['probe_accuracy']:.3f}, same-source macro-F1 {row['macro_f1']:.4f})"
        )
    click.echo(json.dumps({"chosen": chosen}))
