"""``hemascope study site-shift``: leave-one-source-out detection of a new laboratory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hemascope.commands.train_cli import data_options, resolve_sources, user_errors


@click.command("site-shift")
@data_options
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="study.md/json here."
)
@click.option(
    "--streams", type=click.IntRange(min=1), default=20, show_default=True, help="Streams per site."
)
@click.option("--seed", type=int, default=50, show_default=True)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding and fingerprint cache (default ~/.cache/hemascope/finetune).",
)
@user_errors
def study_site_shift_command(
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    out: Path,
    streams: int,
    seed: int,
    cache: Path | None,
) -> None:
    """Measure how well the acquisition check and the drift monitor notice a laboratory never trained on."""
    from hemascope.training.fingerprints import fingerprint_files
    from hemascope.training.multisource import load_sourced
    from hemascope.training.siteshift import SiteShiftConfig, run_site_shift, write_json
    from hemascope.training.siteshift_report import write_markdown
    from hemascope.training.sitestudy import SiteStudyConfig, frozen_embeddings

    def log(line: str) -> None:
        click.echo(line, err=True)

    sources = resolve_sources(data, spec, probe, no_probe)
    cache_dir = cache or Path.home() / ".cache" / "hemascope" / "finetune"
    sourced = load_sourced(sources, log=log)
    if len(sourced.scan.training_sites()) < 2:
        raise click.BadParameter("needs at least two training laboratories (sites)", param_hint="--data")
    embeddings = frozen_embeddings(
        sourced, "cellcrop-hematoxylin", SiteStudyConfig(sources, out, [], cache_dir=cache_dir, log=log)
    )
    fingerprints = fingerprint_files(sourced.paths, cache_dir=cache_dir, workers=2, log=log)
    result = run_site_shift(
        sourced, fingerprints, embeddings, SiteShiftConfig(streams=streams, seed=seed, log=log)
    )
    command = " ".join(["hemascope", *sys.argv[1:]])
    result["command"] = command
    write_json(result, out)
    click.echo(f"study: {write_markdown(result, out, command)}")


@click.command("acquisition")
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The bundle to add an acquisition reference to (rewritten as a new version).",
)
@data_options
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Fingerprint cache (default ~/.cache/hemascope/finetune).",
)
@user_errors
def train_acquisition_command(
    bundle: Path,
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    cache: Path | None,
) -> None:
    """Add the acquisition reference to a bundle trained without one, from its own sources and split."""
    import json

    from hemascope.training.attach import attach_acquisition

    result = attach_acquisition(
        bundle,
        resolve_sources(data, spec, probe, no_probe),
        cache_dir=cache or Path.home() / ".cache" / "hemascope" / "finetune",
        log=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(result, indent=2))
