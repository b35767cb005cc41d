"""``hemascope data bccd-to-yolo``, ``hemascope data cells-to-yolo`` and ``hemascope train detector``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def run_bccd_to_yolo(source: Path | None, out: Path) -> Path:
    """Converts BCCD (default ``<shared data>/bccd``) and prints the conversion report; returns data.yaml."""
    from hemascope.data import shared_data_dir
    from hemascope.detection.bccd import convert_bccd

    report = convert_bccd(source or shared_data_dir() / "bccd", out)
    click.echo(report.to_text())
    data_yaml = Path(report.out) / "data.yaml"
    click.echo(f"dataset: {data_yaml}")
    return data_yaml


def run_cells_to_yolo(source: Path | None, out: Path) -> Path:
    """Builds the synthetic-box variant (default ``<shared data>/bloodcells-5class``); returns data.yaml."""
    from hemascope.data import shared_data_dir
    from hemascope.detection.synthetic_boxes import convert_cells

    report = convert_cells(source or shared_data_dir() / "bloodcells-5class", out)
    click.echo(report.to_text())
    data_yaml = Path(report.out) / "data.yaml"
    click.echo(f"dataset: {data_yaml}")
    click.echo(
        "warning: every image has the same box; mAP on this dataset is a classification score, not a "
        f"detection result (see {Path(report.out) / 'README.md'})",
        err=True,
    )
    return data_yaml


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to Ultralytics train arguments; values are read as YAML (0.5, true, null, text)."""
    import yaml

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


def run_train_detector(data: Path, out: Path, extra: tuple[str, ...] = (), **settings: Any) -> None:
    """Trains, evaluates and exports the detector; prints where everything went and the metrics table.

    ``settings`` are :func:`~hemascope.detection.train.train_detector`'s keyword arguments; ``extra`` are
    ``KEY=VALUE`` strings for any other Ultralytics train argument.
    """
    from hemascope.detection.card import format_metrics_table
    from hemascope.detection.train import train_detector

    overrides = parse_overrides(extra)
    clash = sorted(set(overrides) & {*settings, "data", "project", "name"})
    if clash:
        raise click.BadParameter(
            f"{clash} have options of their own (or are set by hemascope)", param_hint="--set"
        )
    result = train_detector(
        data,
        out,
        command=" ".join(["hemascope", *sys.argv[1:]]),
        log=lambda line: click.echo(line, err=True),
        **settings,
        **overrides,
    )
    click.echo(f"weights: {result.weights}")
    click.echo(f"onnx: {result.onnx}" if result.onnx else f"onnx: not written ({result.onnx_error})")
    click.echo(f"metrics: {result.metrics_path}")
    click.echo(f"model card: {result.card_path}")
    click.echo(f"plots: {len(result.plots)} in {result.run_dir}")
    click.echo(f"training time: {result.train_seconds:.1f} s")
    click.echo(f"\nval split, best.pt:\n{format_metrics_table(result.metrics)}")
    if result.dataset_kind == "synthetic-box":
        click.echo("\nNOT a detection result: one fixed box per image, so mAP here scores the class only.")
    if result.onnx is None:
        raise SystemExit(1)
