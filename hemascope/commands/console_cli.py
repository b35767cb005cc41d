"""``hemascope serve console`` (the research console, a web application) and ``hemascope console add-user``.
Only click is imported at module level."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click


def serve_console(overrides: dict[str, Any]) -> None:
    """Runs the console with uvicorn until SIGTERM/SIGINT; exits 2 when its files are wrong."""
    import uvicorn

    from console.app import create_app
    from console.settings import ConsoleSettings
    from hemascope.errors import HemascopeError

    settings = ConsoleSettings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        app = create_app(settings)
    except HemascopeError as exc:
        click.echo(f"hemascope: console cannot start: {exc.message}", err=True)
        sys.exit(2)
    if not settings.users_file.exists():
        click.echo(
            f"console: no users file at {settings.users_file}: nobody can log in until "
            "`hemascope console add-user NAME --role ROLE --users-file FILE` makes it",
            err=True,
        )
    click.echo(
        f"console serving on http://{settings.host}:{settings.port} (gateway {settings.gateway_address})",
        err=True,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the previous handler in
    # place; the default one would end the process as killed by SIGTERM (exit -15), which `hemascope up` and
    # orchestrators read as a crash. The shutdown is done by then: let the repeated signal pass.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


@click.command("console")
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="HTTP port (default 8080).")
@click.option("--gateway", default=None, help="host:port of the gateway (default 127.0.0.1:50050).")
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Who may log in, with which role (`hemascope console add-user`).",
)
@click.option("--database-url", default=None, help="Result store (default sqlite:///console.db).")
def serve_console_command(
    host: str | None, port: int | None, gateway: str | None, users_file: Path | None, database_url: str | None
) -> None:
    """The research console: analyse, browse, review and export results in a web browser.

    Other settings come from HEMASCOPE_CONSOLE_* environment variables (docs/console.md).
    """
    serve_console(
        {
            "host": host,
            "port": port,
            "gateway_address": gateway,
            "users_file": users_file,
            "database_url": database_url,
        }
    )


@click.group("console")
def console_group() -> None:
    """Manage who may use the research console."""


@console_group.command("add-user")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "reviewer", "admin"]),
    required=True,
    help="viewer: browse and export; reviewer: also analyse and review; admin: also delete and run jobs.",
)
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The console's users file (made when missing).",
)
def add_user_command(name: str, role: str, users_file: Path) -> None:
    """Lets NAME log in with a gateway API key as ROLE.

    The key is read from HEMASCOPE_API_KEY, or asked for (never on the command line); only its hash is
    written.
    """
    from console.users import add_user
    from hemascope.errors import ConfigurationError

    key = os.environ.get("HEMASCOPE_API_KEY") or click.prompt("API key", hide_input=True)
    try:
        add_user(users_file, name, role, key.strip())
    except ConfigurationError as exc:
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    click.echo(f"{name} may now log in to the console as {role} (users file {users_file})")
