"""The click commands ``train classifiers``, ``train backbone``, ``train quantize`` and ``evaluate`` (the
work is in :mod:`hemascope.commands.train` and :mod:`hemascope.training`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from hemascope.commands.addresses import address_callback
from hemascope.training.sources import DatasetSpec

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_MODELS = "logistic_regression,svm,random_forest,xgboost,kmeans"


def user_errors(fn: F) -> F:
    """A user's mistake (a bad spec, a missing folder, a leaking split) is one line on stderr, exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hemascope.errors import HemascopeError

        try:
            return fn(*args, **kwargs)
        except HemascopeError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2)
        except FileNotFoundError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def resolve_sources(
    data: tuple[str, ...], spec: Path | None, probe: str | None, no_probe: bool
) -> list[DatasetSpec]:
    """Datasets from ``--sources SPEC`` or repeated ``--data [NAME=]PATH``, plus an evaluation-only probe."""
    from hemascope.training.crosssource import default_probe
    from hemascope.training.sources import SourceSpecError, load_spec, spec_from_option

    if spec is not None and data:
        raise SourceSpecError("give either --sources SPEC or --data, not both")
    if spec is None and not data:
        raise SourceSpecError("no data: give --sources SPEC.yaml or one or more --data [NAME=]PATH")
    specs = load_spec(spec) if spec is not None else [spec_from_option(d) for d in data]
    if probe is not None:
        specs.append(spec_from_option(probe, role="evaluation"))
    elif spec is None and not no_probe and (default := default_probe()) is not None:
        specs.append(spec_from_option(f"barcelona-probe={default}", role="evaluation"))
    return specs


def _models(models: str) -> list[str]:
    from hemascope.training.models import MODELS

    chosen = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown models {unknown}; known: {sorted(MODELS)}", param_hint="--models")
    return chosen


def data_options(fn: F) -> F:
    fn = click.option(
        "--no-probe", is_flag=True, help="With --data: do not add the shared Barcelona neutrophil probe."
    )(fn)
    fn = click.option(
        "--probe",
        default=None,
        metavar="[NAME=]PATH",
        help="An evaluation-only dataset (scored, never fitted on); with --data the shared Barcelona "
        "neutrophil probe is added by default.",
    )(fn)
    fn = click.option(
        "--sources",
        "spec",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML dataset spec: roots, sites, grouping, roles (e.g. configs/data/three-labs.yaml).",
    )(fn)
    fn = click.option(
        "--data",
        multiple=True,
        metavar="[NAME=]PATH",
        help="A folder-per-class dataset, one site named NAME (default: the folder's name); repeat for "
        "several. Grouped by patient when it has a manifest.csv with a patient column, else by duplicates.",
    )(fn)
    return fn


@click.command("classifiers")
@data_options
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option(
    "--backbone",
    default=None,
    help="Feature backbone: efficientnet_lite0_blood (fine-tuned, the serving default), efficientnet_lite0 "
    "(ImageNet, the study's) or resnet50 (default: HEMASCOPE_FEATURE_BACKBONE, else "
    "efficientnet_lite0_blood).",
)
@click.option(
    "--address",
    default=None,
    callback=address_callback(50051),
    help="Embed through a feature service at host:port (else in-process).",
)
@click.option("--models", default=DEFAULT_MODELS, show_default=True, help="Comma-separated models to train.")
@click.option(
    "--cv-folds", default=5, show_default=True, help="Grouped stratified CV folds on the training part."
)
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="Report folder (default BUNDLE-report)."
)
@click.option(
    "--augment",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Augmented copies (stain, colour, scale, rotation, flip) of each FIT-part image; 0 = none.",
)
@click.option(
    "--preprocessing",
    default=None,
    help="Preprocessing option (default: the one a fine-tuned backbone was trained on, else the default).",
)
@click.option(
    "--loso/--no-loso",
    default=True,
    show_default=True,
    help="Leave-one-source-out: every training site held out in turn (fine-tuned backbones are "
    "fine-tuned again per fold, cached).",
)
@click.option(
    "--loso-models", default=None, help="Comma-separated models scored leave-one-source-out (default: all)."
)
@user_errors
def train_classifiers_command(
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    out: Path,
    backbone: str | None,
    address: str | None,
    models: str,
    cv_folds: int,
    report: Path | None,
    augment: int,
    preprocessing: str | None,
    loso: bool,
    loso_models: str | None,
) -> None:
    """Embed the datasets, train the study's models, evaluate them per site and leave-one-source-out,
    write a bundle, a report and a model card."""
    from hemascope.commands.train import run_train

    run_train(
        resolve_sources(data, spec, probe, no_probe),
        out,
        backbone=backbone,
        address=address,
        models=_models(models),
        cv_folds=cv_folds,
        report=report,
        augment=augment,
        preprocessing=preprocessing,
        loso=loso,
        loso_models=_models(loso_models) if loso_models else None,
    )


@click.command("backbone")
@data_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for weights.pth, backbone.json and MODEL_CARD.md (default: the bundled backbone's folder, "
    "models/backbones/efficientnet_lite0_blood).",
)
@click.option("--preprocessing", default="cellcrop-hematoxylin", show_default=True, help="Input option.")
@click.option(
    "--copies", type=click.IntRange(min=0), default=5, show_default=True, help="Re-acquired copies per image."
)
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--lr", type=float, default=3e-4, show_default=True, help="Learning rate of the fine-tuned stages."
)
@click.option(
    "--seed", type=int, default=50, show_default=True, help="Split, re-acquisition and training seed."
)
@click.option(
    "--loso/--no-loso", default=True, show_default=True, help="Leave-one-source-out check of the recipe."
)
@click.option(
    "--loso-models", default="logistic_regression", show_default=True, help="Models scored per fold."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Front-feature and fold cache (default ~/.cache/hemascope/finetune); reruns reuse it.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Input-preparing processes."
)
@user_errors
def train_backbone_command(
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    out: Path | None,
    preprocessing: str,
    copies: int,
    epochs: int,
    lr: float,
    seed: int,
    loso: bool,
    loso_models: str,
    cache: Path | None,
    workers: int,
) -> None:
    """Fine-tune EfficientNet-Lite0's last stages on blood cells of several sites (a new named backbone)."""
    from hemascope.imaging.preprocess import get_preprocessing
    from hemascope.training.finetune.features import VariantPlan
    from hemascope.training.finetune.loop import FineTuneConfig
    from hemascope.training.finetune.recipe import Recipe
    from hemascope.training.finetune.run import BackboneTrainConfig, train_backbone
    from services.feature.backbones import backbone_dir

    get_preprocessing(preprocessing)
    recipe = Recipe(
        VariantPlan(preprocessing, copies=copies, seed=seed),
        FineTuneConfig(epochs=epochs, lr=lr, seed=seed),
    )
    config = BackboneTrainConfig(
        sources=resolve_sources(data, spec, probe, no_probe),
        out=out or backbone_dir() / "efficientnet_lite0_blood",
        recipe=recipe,
        loso=loso,
        loso_models=_models(loso_models),
        seed=seed,
        cache_dir=cache or Path.home() / ".cache" / "hemascope" / "finetune",
        workers=workers,
        log=lambda line: click.echo(line, err=True),
        command=" ".join(["hemascope", *sys.argv[1:]]),
    )
    meta = train_backbone(config)
    click.echo(f"backbone: {config.out} (weights SHA-256 {meta['weights_sha256'][:16]}...)")


@click.command("quantize")
@data_options
@click.option(
    "--backbone",
    default="efficientnet_lite0_blood_int8",
    show_default=True,
    help="The quantized backbone to make (its fp32 source is part of its definition).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for model.onnx and backbone.json (default: <backbone dir>/<backbone>).",
)
@click.option(
    "--images", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration images."
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="How activation ranges are calibrated.",
)
@click.option("--seed", type=int, default=50, show_default=True, help="Split seed (the bundles' seed).")
@user_errors
def train_quantize_command(
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    backbone: str,
    out: Path | None,
    images: int,
    method: str,
    seed: int,
) -> None:
    """Quantise a fine-tuned backbone to int8 (ONNX Runtime static QDQ), calibrated on training images."""
    from hemascope.training.quantize import QuantizeConfig, quantize_backbone
    from services.feature.backbones import backbone_dir

    config = QuantizeConfig(
        sources=resolve_sources(data, spec, probe, no_probe),
        out=out or backbone_dir() / backbone,
        name=backbone,
        images=images,
        method=method,
        seed=seed,
        command=" ".join(["hemascope", *sys.argv[1:]]),
        log=lambda line: click.echo(line, err=True),
    )
    meta = quantize_backbone(config)
    click.echo(f"backbone: {config.out} (int8 graph SHA-256 {meta['weights_sha256'][:16]}...)")


@click.command("evaluate")
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The bundle to score on --data/--sources (required unless --batch).",
)
@click.option(
    "--batch",
    "batch_out",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Score a `hemascope batch analyze` result instead (true class: each image's folder name).",
)
@data_options
@click.option(
    "--address",
    default=None,
    callback=address_callback(50051),
    help="Embed through a feature service at host:port (else in-process).",
)
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with per-model metrics.")
@user_errors
def evaluate_command(
    bundle: Path | None,
    batch_out: Path | None,
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    address: str | None,
    as_json: bool,
) -> None:
    """Score a model bundle on folder-per-class datasets: pooled, per dataset and per site."""
    from hemascope.commands.train import run_evaluate, run_evaluate_batch

    if batch_out is not None:
        if bundle is not None or data or spec is not None:
            raise click.UsageError(
                "--batch scores a batch result on its own: drop --bundle, --data and --sources"
            )
        run_evaluate_batch(batch_out, as_json=as_json)
        return
    if bundle is None:
        raise click.UsageError("give --bundle (with --data or --sources), or --batch")
    specs = resolve_sources(data, spec, probe, no_probe=True if probe is None else no_probe)
    run_evaluate(bundle, specs, address=address, as_json=as_json)


@click.command("sites")
@data_options
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="study.md/json here."
)
@click.option(
    "--candidates",
    default="frozen:plain,frozen:cellcrop-hematoxylin,finetuned:plain,finetuned:cellcrop-hematoxylin",
    show_default=True,
    help="Comma-separated frozen:<option> / finetuned:<option> pipelines.",
)
@click.option("--models", default="logistic_regression", show_default=True, help="Models scored per fold.")
@click.option("--copies", type=click.IntRange(min=0), default=5, show_default=True, help="Copies per image.")
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=50, show_default=True)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding, front-feature and fold cache (default ~/.cache/hemascope/finetune).",
)
@user_errors
def study_sites_command(
    data: tuple[str, ...],
    spec: Path | None,
    probe: str | None,
    no_probe: bool,
    out: Path,
    candidates: str,
    models: str,
    copies: int,
    epochs: int,
    seed: int,
    cache: Path | None,
) -> None:
    """Compare pipelines leave-one-source-out and pick the one that does best at unseen laboratories."""
    from hemascope.training.finetune.loop import FineTuneConfig
    from hemascope.training.sitestudy import SiteStudyConfig, parse_candidate, run_site_study

    chosen = [c.strip() for c in candidates.split(",") if c.strip()]
    for candidate in chosen:
        parse_candidate(candidate)
    config = SiteStudyConfig(
        sources=resolve_sources(data, spec, probe, no_probe),
        out=out,
        candidates=chosen,
        models=_models(models),
        seed=seed,
        copies=copies,
        finetune=FineTuneConfig(epochs=epochs, seed=seed),
        cache_dir=cache or Path.home() / ".cache" / "hemascope" / "finetune",
        log=lambda line: click.echo(line, err=True),
        command=" ".join(["hemascope", *sys.argv[1:]]),
    )
    study = run_site_study(config)
    click.echo(f"study: {out / 'study.md'}\nchosen: {study['chosen']}")
