"""``hemascope batch analyze|embed``: the services' pipeline over a whole image archive, on Ray Data."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from hemascope.data import REPO_ROOT
from hemascope.errors import FailedPrecondition


@click.group("batch")
def batch_group() -> None:
    """Analyse or embed a whole image archive on Ray (locally by default, or on a cluster)."""


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("input_spec", metavar="INPUT"),
        click.option(
            "--out",
            required=True,
            help="Result Parquet dataset (folder or fsspec URL); a rerun skips the images already there.",
        ),
        click.option(
            "--ray-address",
            default="",
            help="A Ray cluster (ray://host:10001 or auto); omit: a local Ray with this machine's cores.",
        ),
        click.option(
            "--workers", type=click.IntRange(min=0), default=0, help="Actors; 0: one per core (or GPU)."
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=0),
            default=0,
            help="Images per batch; 0: 32 (128 on GPU).",
        ),
        click.option("--no-gpu", is_flag=True, help="Do not use the cluster's GPUs."),
        click.option(
            "--image-column", default=None, help="Parquet INPUT: the bytes column (default image/data/bytes)."
        ),
        click.option(
            "--path-column", default=None, help="Parquet INPUT: the path column (default path/source/file)."
        ),
        click.option(
            "--rows-per-part",
            type=click.IntRange(min=1),
            default=100_000,
            show_default=True,
            help="Rows per Parquet file written.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@batch_group.command("analyze")
@_common
@click.option(
    "--bundle",
    default=str(REPO_ROOT / "models" / "bloodcells-5class"),
    show_default="models/bloodcells-5class",
    help="Model bundle; its backbone and preprocessing are used.",
)
@click.option("--embedding/--no-embedding", default=False, show_default=True, help="Store the embeddings.")
@click.option("--detect", is_flag=True, help="Also detect cells (the detector service's model and defaults).")
@click.option("--detector-model", default="", help="Detector ONNX export (default: the committed one).")
def analyze_command(bundle: str, embedding: bool, detect: bool, detector_model: str, **common: Any) -> None:
    """Classify every image of INPUT (folder, glob, Parquet of bytes or paths, fsspec URL) into OUT."""
    _run(
        common,
        classify=True,
        bundle=bundle,
        embedding=embedding,
        detect=detect,
        detector_model=detector_model,
    )


@batch_group.command("embed")
@_common
@click.option("--backbone", default="", help="Backbone (default: the feature service's).")
@click.option("--preprocessing", default="", help="Preprocessing option (default: the feature service's).")
def embed_command(backbone: str, preprocessing: str, **common: Any) -> None:
    """Embed every image of INPUT into OUT (embedding, hashes, input check, provenance)."""
    _run(common, classify=False, backbone=backbone, preprocessing=preprocessing)


def _run(common: dict[str, Any], **job_fields: Any) -> None:
    try:
        from batch.runner import BatchJob, run
    except ImportError as exc:
        raise FailedPrecondition(
            f"batch analysis needs Ray Data ({exc.name} is missing): pip install 'hemascope[batch]'",
            reason="RAY_MISSING",
        ) from None
    from tqdm import tqdm

    as_json, quiet = common.pop("as_json"), common.pop("no_progress")
    job = BatchJob(
        input=common["input_spec"],
        out=common["out"],
        ray_address=common["ray_address"],
        actors=common["workers"],
        batch_size=common["batch_size"],
        use_gpu=not common["no_gpu"],
        bytes_column=common["image_column"],
        path_column=common["path_column"],
        rows_per_part=common["rows_per_part"],
        log_level=_log_level(),
        **job_fields,
    )
    bar = tqdm(unit="img", disable=quiet, dynamic_ncols=True, desc="batch")
    try:
        summary = run(
            job, progress=lambda n: bar.update(n) and None, total=lambda n: setattr(bar, "total", n)
        )
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        for line in summary.lines():
            click.echo(line)


def _log_level() -> str:
    import logging

    return logging.getLevelName(logging.getLogger().getEffectiveLevel())
