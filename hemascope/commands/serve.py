"""``hemascope serve <service>`` and ``hemascope export-backbone``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from hemascope.errors import HemascopeError
from hemascope.logs import configure_logging, get_logger
from hemascope.server import ManagedServer
from hemascope.settings import ServerSettings

log = get_logger(__name__)


def run_server(
    name: str,
    settings: ServerSettings,
    create_server: Callable[[Any], tuple[ManagedServer, int]],
    describe: str = "",
) -> None:
    """Runs a service until SIGTERM/SIGINT; exits 2 with a clear message if its models cannot load."""
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        server, port = create_server(settings)
    except HemascopeError as exc:
        click.echo(f"hemascope: {name} service cannot start: {exc.message}", err=True)
        sys.exit(2)
    server.install_signal_handlers(settings.grace_period_s)
    try:
        server.wait_ready()
    except Exception as exc:
        server.stop(0)
        message = exc.message if isinstance(exc, HemascopeError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"hemascope: {name} service cannot start: {message}", err=True)
        sys.exit(2)
    if not server.is_ready:  # stopped by a signal while loading
        server.wait_for_termination()
        return
    where = f"{settings.host}:{port}; metrics on port {server.metrics_port}"
    click.echo(f"{name} service ({describe}) serving on {where}", err=True)
    server.wait_for_termination()


def serve_feature(overrides: dict[str, Any]) -> None:
    from services.feature.server import create_server
    from services.feature.settings import FeatureSettings

    settings = FeatureSettings(**overrides)
    run_server("feature", settings, create_server, settings.backbone)


def serve_classifier(overrides: dict[str, Any]) -> None:
    from services.classifier.server import create_server
    from services.classifier.settings import ClassifierSettings

    settings = ClassifierSettings(**overrides)
    watching = f"; watching every {settings.watch_interval_s} s" if settings.watch_interval_s else ""
    run_server("classifier", settings, create_server, f"bundle {settings.bundle}{watching}")


def serve_detector(overrides: dict[str, Any]) -> None:
    from services.detector.server import create_server
    from services.detector.settings import DetectorSettings

    settings = DetectorSettings(**overrides)
    run_server(
        "detector", settings, create_server, f"model {settings.model.parent.name}/{settings.model.name}"
    )


def serve_explain(overrides: dict[str, Any]) -> None:
    from services.explain.server import create_server
    from services.explain.settings import ExplainSettings

    settings = ExplainSettings(**overrides)
    run_server("explain", settings, create_server, f"bundle {settings.bundle}")


def export_backbone(backbone: str | None) -> str:
    """Makes or finds the ONNX export for the configured backbone; returns its path."""
    from hemascope.files import file_sha256
    from services.feature.backbones import get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.settings import FeatureSettings

    overrides: dict[str, Any] = {"backbone": backbone} if backbone else {}
    settings = FeatureSettings(**overrides)
    spec = get_spec(settings.backbone)
    weights = weights_file(spec.name, settings.resnet50_checkpoint)
    return str(ensure_onnx(spec, weights, file_sha256(weights), settings.model_cache_dir))
