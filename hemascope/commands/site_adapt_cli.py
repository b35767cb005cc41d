"""``hemascope site adapt`` (a site profile from a laboratory's labelled cells) and ``hemascope site curve``
(how many labelled cells adaptation needs). The work is in :mod:`hemascope.site.adapt` and
:mod:`hemascope.site.curve`; exit 2 for a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hemascope.commands.addresses import address_callback
from hemascope.commands.train_cli import user_errors
from hemascope.errors import InvalidArgument

_bundle = click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The model bundle to adapt (e.g. models/bloodcells-5class).",
)
_data = click.option(
    "--data",
    required=True,
    metavar="[NAME=]PATH",
    help="The laboratory's labelled cells, one folder per class. With a manifest.csv (columns file, "
    "patient) the cross-validation folds never split a patient.",
)
_address = click.option(
    "--address",
    default=None,
    callback=address_callback(50051),
    help="Embed through a feature service at host:port (else in-process).",
)


def _sizes(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of positive integers, e.g. 5,10,25,50,100") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("a comma-separated list of positive integers, e.g. 5,10,25,50,100")
    return sizes


@click.command("adapt")
@_bundle
@_data
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The site profile file to write (.npz is added when missing); its stem is the profile's name.",
)
@click.option("--site", default=None, help="The site's name recorded in the profile (default: the data's).")
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for adapt.md, adapt.json and adapt.png (default: none).",
)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="CV folds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the CV folds.")
@click.option(
    "--target-coverage",
    type=click.FloatRange(0.5, 1.0),
    default=0.95,
    show_default=True,
    help="Coverage the re-chosen abstain thresholds keep on the site's cells.",
)
@_address
@user_errors
def adapt_command(
    bundle: Path,
    data: str,
    out: Path,
    site: str | None,
    report: Path | None,
    folds: int,
    seed: int,
    target_coverage: float,
    address: str | None,
) -> None:
    """Refit a bundle's calibration, class biases, referral thresholds, embedding adapter and OOD
    reference on one laboratory's labelled cells into a site profile, keeping only what raises the
    cross-validated macro-F1 and never lowering myeloblast sensitivity."""
    from hemascope.bundle import load_bundle
    from hemascope.site.adapt import AdaptSettings, fit_profile
    from hemascope.site.adapt_report import render_adapt_report
    from hemascope.site.cells import site_cells
    from hemascope.site.profile import SUFFIX, check_name
    from hemascope.training.sources import spec_from_option

    name = out.name.removesuffix(SUFFIX)
    check_name(name)
    loaded = load_bundle(bundle)
    spec = spec_from_option(data)
    cells = site_cells(loaded, [spec], address=address, progress=True)
    settings = AdaptSettings(folds=folds, seed=seed, target_coverage=target_coverage)
    profile = fit_profile(
        loaded, cells.scaled, cells.y, cells.patients, site=site or spec.name, settings=settings
    )
    path = profile.save(out)
    for model, summary in profile.summary["models"].items():
        before, after = summary["baseline"], summary["after"]
        click.echo(
            f"{model}: {summary['chosen'] if summary['kept_temperature'] else 'none'}; macro-F1 "
            f"{before['macro_f1']:.3f} -> {after['macro_f1']:.3f}, myeloblast sensitivity "
            f"{before['myeloblast_sensitivity']} -> {after['myeloblast_sensitivity']} (cross-validated)"
        )
    if report is not None:
        click.echo(f"report: {render_adapt_report(profile, path, report)}")
    click.echo(f"profile: {path}")


@click.command("curve")
@_bundle
@_data
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for curve.md, curve.json and curve.png.",
)
@click.option(
    "--sizes",
    default="5,10,25,50,100",
    show_default=True,
    callback=_sizes,
    help="Labelled cells per class to adapt with.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Repetitions.")
@_address
@user_errors
def curve_command(
    bundle: Path, data: str, out: Path, sizes: list[int], seeds: int, address: str | None
) -> None:
    """Adapt with a few cells per class of some patients of a site and score the rest of its patients,
    before and after: how many labelled cells the site needs. The data must name patients."""
    from hemascope.bundle import load_bundle
    from hemascope.site.adapt_report import render_curve_report
    from hemascope.site.cells import site_cells
    from hemascope.site.curve import learning_curve
    from hemascope.training.sources import spec_from_option

    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} is a file: give a folder")
    loaded = load_bundle(bundle)
    spec = spec_from_option(data)
    cells = site_cells(loaded, [spec], address=address, progress=True)
    result = learning_curve(loaded, cells.scaled, cells.y, cells.patients, sizes=sizes, seeds=seeds)
    result["bundle"] = {"path": str(bundle), "version": loaded.manifest.bundle_version}
    result["data"] = {"name": spec.name, "root": str(spec.root)}
    report = render_curve_report(result, f"{spec.name} on bundle {loaded.manifest.bundle_version}", out)
    click.echo(json.dumps(result["summary"]))
    click.echo(f"report: {report}")
