"""The ``hemascope`` command. Subcommands import their service lazily so ``--help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import click

from hemascope.logs import configure_logging


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Log level for this command.")
@click.option("--log-json/--log-console", default=False, show_default=True, help="Log format.")
def main(log_level: str, log_json: bool) -> None:
    """Hemascope: blood-cell image analysis services and tools."""
    configure_logging(log_level, json=log_json)


@main.group()
def serve() -> None:
    """Run one of the gRPC services (settings from HEMASCOPE_<SERVICE>_* environment variables)."""


@serve.command("feature")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50051; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9464).")
@click.option("--backbone", default=None, help="efficientnet_lite0 (default) or resnet50.")
@click.option("--redis-url", default=None, help="Embedding cache in Redis; unset: in-process LRU.")
def serve_feature(
    host: str | None, port: int | None, metrics_port: int | None, backbone: str | None, redis_url: str | None
) -> None:
    """The feature-embedding service."""
    from hemascope.commands.serve import serve_feature as run

    overrides = {"host": host, "port": port, "metrics_port": metrics_port, "backbone": backbone}
    overrides["redis_url"] = redis_url
    run({k: v for k, v in overrides.items() if v is not None})


@main.command("embed")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--address", default=None, help="host:port of a running feature service; omit: in-process.")
@click.option("--backbone", default=None, help="Backbone (in-process) or the one expected (service).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@click.option("--with-vector", is_flag=True, help="With --json: include the embedding values.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds allowed per image.")
def embed(
    images: tuple[str, ...],
    address: str | None,
    backbone: str | None,
    as_json: bool,
    with_vector: bool,
    timeout: float,
) -> None:
    """Embed IMAGES and print dimension, backbone, cache hit and time per image."""
    from hemascope.commands.embed import run_embed

    failures = run_embed(
        list(images),
        address=address,
        backbone=backbone,
        as_json=as_json,
        with_vector=with_vector,
        timeout=timeout,
    )
    if failures:
        raise SystemExit(1)


@main.command("export-backbone")
@click.option("--backbone", default=None, help="efficientnet_lite0 (default) or resnet50.")
def export_backbone(backbone: str | None) -> None:
    """Make (or find) the ONNX export of a backbone in the model cache and print its path."""
    from hemascope.commands.serve import export_backbone as run

    click.echo(run(backbone))


@main.command("demo")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--backbone", default=None, help="efficientnet_lite0 (default) or resnet50 (needs a checkpoint)."
)
def demo(images: tuple[Path, ...], backbone: str | None) -> None:
    """The main job: start the feature service and embed sample images through it."""
    from hemascope.commands.demo import run_demo

    run_demo(list(images), backbone)
