"""``hemascope tls dev-ca DIR`` (registered in hemascope.cli). Only click is imported at module level."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("tls")
def tls_group() -> None:
    """Certificates for TLS and mutual TLS between callers, the gateway and the services."""


@tls_group.command("dev-ca")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=30, show_default=True, help="Validity of every certificate, in days.")
def dev_ca(folder: Path, days: int) -> None:
    """Make a development CA and certificates for the gateway, every service, an admin and a client in
    FOLDER (for `hemascope up --tls-dir FOLDER`; never for production)."""
    try:
        from hemascope.devca import ADMIN_SUBJECT, make_dev_ca
    except ImportError:  # pragma: no cover - cryptography is a development dependency
        raise click.ClickException(
            "the dev CA needs the 'cryptography' package: pip install cryptography"
        ) from None
    if folder.exists() and any(folder.iterdir()):
        raise click.UsageError(f"{folder} is not empty: choose a new folder (nothing is overwritten)")
    made = make_dev_ca(folder, days)
    click.echo(f"development CA in {made.folder} (valid {days} days):")
    click.echo(f"  CA: {made.ca}")
    click.echo("  gateway and services: gateway|feature|classifier|detector|explain.pem with -key.pem")
    click.echo(f"  admin (CN {ADMIN_SUBJECT}): admin.pem, admin-key.pem; client: client.pem, client-key.pem")
    click.echo(f"use: hemascope up --tls-dir {made.folder}")
