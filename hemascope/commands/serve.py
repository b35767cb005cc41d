"""``hemascope serve ...`` and ``hemascope export-backbone``."""

from __future__ import annotations

import sys
from typing import Any

import click

from hemascope.errors import HemascopeError
from hemascope.logs import configure_logging, get_logger

log = get_logger(__name__)


def serve_feature(overrides: dict[str, Any]) -> None:
    """Runs the feature service until SIGTERM/SIGINT; exits 2 with a clear message if the model can't load."""
    from services.feature.server import create_server
    from services.feature.settings import FeatureSettings

    settings = FeatureSettings(**overrides)
    configure_logging(settings.log_level, json=settings.log_json)
    server, port = create_server(settings)
    server.install_signal_handlers(settings.grace_period_s)
    try:
        server.wait_ready()
    except Exception as exc:
        server.stop(0)
        message = exc.message if isinstance(exc, HemascopeError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"hemascope: feature service cannot start: {message}", err=True)
        sys.exit(2)
    if not server.is_ready:  # stopped by a signal while loading
        server.wait_for_termination()
        return
    click.echo(
        f"feature service ({settings.backbone}) serving on {settings.host}:{port}; "
        f"metrics on port {server.metrics_port}",
        err=True,
    )
    server.wait_for_termination()


def export_backbone(backbone: str | None) -> str:
    """Makes or finds the ONNX export for the configured backbone; returns its path."""
    from services.feature.backbones import file_sha256, get_spec, weights_file
    from services.feature.onnx_export import ensure_onnx
    from services.feature.settings import FeatureSettings

    overrides: dict[str, Any] = {"backbone": backbone} if backbone else {}
    settings = FeatureSettings(**overrides)
    spec = get_spec(settings.backbone)
    weights = weights_file(spec.name, settings.resnet50_checkpoint)
    return str(ensure_onnx(spec, weights, file_sha256(weights), settings.model_cache_dir))
