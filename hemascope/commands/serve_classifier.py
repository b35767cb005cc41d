"""``hemascope serve classifier``."""

from __future__ import annotations

import sys
from typing import Any

import click

from hemascope.errors import HemascopeError
from hemascope.logs import configure_logging


def serve_classifier(overrides: dict[str, Any]) -> None:
    """Runs the classifier service until SIGTERM/SIGINT; exits 2 with a clear message if the bundle
    can't load."""
    from services.classifier.server import create_server
    from services.classifier.settings import ClassifierSettings

    settings = ClassifierSettings(**overrides)
    configure_logging(settings.log_level, json=settings.log_json)
    server, port = create_server(settings)
    server.install_signal_handlers(settings.grace_period_s)
    try:
        server.wait_ready()
    except Exception as exc:
        server.stop(0)
        message = exc.message if isinstance(exc, HemascopeError) else f"{type(exc).__name__}: {exc}"
        click.echo(f"hemascope: classifier service cannot start: {message}", err=True)
        sys.exit(2)
    if not server.is_ready:  # stopped by a signal while loading
        server.wait_for_termination()
        return
    watching = f"; watching every {settings.watch_interval_s} s" if settings.watch_interval_s else ""
    click.echo(
        f"classifier service (bundle {settings.bundle}{watching}) serving on {settings.host}:{port}; "
        f"metrics on port {server.metrics_port}",
        err=True,
    )
    server.wait_for_termination()
