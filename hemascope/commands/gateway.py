"""``hemascope serve gateway`` (registered in hemascope.cli). Only click is imported at module level."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def serve_gateway(overrides: dict[str, Any]) -> None:
    """Runs the gateway until SIGTERM/SIGINT; exits 2 with a clear message when its files are wrong."""
    from gateway.server import create_server
    from gateway.settings import GatewaySettings
    from hemascope.commands.serve import run_server
    from hemascope.errors import HemascopeError

    settings = GatewaySettings(**overrides)
    services = ", ".join(
        f"{name} {address}"
        for name, address in (
            ("feature", settings.feature_address),
            ("classifier", settings.classifier_address),
            ("detector", settings.detector_address),
            ("explain", settings.explain_address),
        )
    )

    def create(s: GatewaySettings) -> Any:
        try:
            return create_server(s)
        except HemascopeError as exc:
            click.echo(f"hemascope: gateway cannot start: {exc.message}", err=True)
            sys.exit(2)

    run_server("gateway", settings, create, services)


@click.command("gateway")
@click.option("--host", default=None, help="Bind address (default from settings: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50050; 0 = any free port).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default 9463).")
@click.option("--feature", default=None, help="host:port of the feature service (default 127.0.0.1:50051).")
@click.option(
    "--classifier", default=None, help="host:port of the classifier service (default 127.0.0.1:50052)."
)
@click.option("--detector", default=None, help="host:port of the detector service (default 127.0.0.1:50053).")
@click.option("--explain", default=None, help="host:port of the explain service (default 127.0.0.1:50054).")
@click.option(
    "--api-keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="API key file (`hemascope gateway add-key`); unset: authentication off.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append-only audit trail (JSON lines); unset: no audit.",
)
def serve_gateway_command(
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    feature: str | None,
    classifier: str | None,
    detector: str | None,
    explain: str | None,
    api_keys_file: Path | None,
    audit_log: Path | None,
) -> None:
    """The public gateway: AnalysisService (and KServe v2) over the four services, with partial results.

    TLS, limits and resilience settings come from HEMASCOPE_GATEWAY_* environment variables.
    """
    overrides: dict[str, object] = {"host": host, "port": port, "metrics_port": metrics_port}
    overrides |= {
        "feature_address": feature,
        "classifier_address": classifier,
        "detector_address": detector,
        "explain_address": explain,
        "api_keys_file": api_keys_file,
        "audit_log": audit_log,
    }
    serve_gateway({k: v for k, v in overrides.items() if v is not None})
