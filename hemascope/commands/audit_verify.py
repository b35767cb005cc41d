"""``hemascope audit verify`` (check the gateway audit trail), ``hemascope gateway add-key`` (API keys).

Both are click commands defined here and added to the ``hemascope`` group by ``hemascope/cli.py``. The
``audit`` group is about the gateway's audit trail; ``hemascope audit-data`` (dataset audit) is a separate
command. Other gateway administration commands can join ``gateway_group``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def run_audit_verify(path: Path, key_file: Path | None, anchors: tuple[str, ...], as_json: bool) -> int:
    """Verifies the audit log at ``path`` and prints the result; returns the exit code (0 intact, 1 not)."""
    from gateway.audit import read_key_file, verify

    key = read_key_file(key_file) if key_file is not None else None
    result = verify(path, key=key, anchors=anchors)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "first_bad_line": result.first_bad_line,
                    "message": result.message,
                    "head_hash": result.head_hash,
                }
            )
        )
    else:
        status = "OK" if result.ok else "BROKEN"
        click.echo(f"{status}: {path}: {result.message}")
        click.echo(f"records verified: {result.records}")
        if result.first_bad_line is not None:
            click.echo(f"first bad line: {result.first_bad_line}")
        if result.head_hash:
            click.echo(f"head hash: {result.head_hash} (keep it elsewhere; pass it later as --anchor)")
    return 0 if result.ok else 1


@click.group("audit")
def audit_group() -> None:
    """The gateway's audit trail (for datasets see `hemascope audit-data`)."""


@audit_group.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="HMAC key of the log, when it was written with one.",
)
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="HASH",
    help="A head hash printed by an earlier verify; fails if it is no longer in the chain. Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def audit_verify(path: Path, key_file: Path | None, anchors: tuple[str, ...], as_json: bool) -> None:
    """Check the hash chain of the audit log PATH; exit 1 if a line was edited, deleted, moved or inserted."""
    code = run_audit_verify(path, key_file, anchors, as_json)
    if code:
        raise SystemExit(code)


@click.group("gateway")
def gateway_group() -> None:
    """Administer the gateway (API keys)."""


@gateway_group.command("add-key")
@click.argument("caller_id")
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HEMASCOPE_GATEWAY_API_KEYS_FILE",
    required=True,
    help="API key file to append to (default: $HEMASCOPE_GATEWAY_API_KEYS_FILE); created with mode 0600.",
)
@click.option(
    "--role",
    type=click.Choice(["caller", "admin"]),
    default="caller",
    show_default=True,
    help="admin: the key may also call the gateway's administrative RPCs (PromoteBundle).",
)
def gateway_add_key(caller_id: str, keys_file: Path, role: str) -> None:
    """Make an API key for CALLER_ID (a system's name, e.g. lis-north; never a person or patient).

    Only the key's hash is stored. The key is printed once, on stdout: give it to the caller now.
    """
    from gateway.auth import add_key
    from hemascope.errors import HemascopeError

    try:
        key = add_key(keys_file, caller_id, role)
    except HemascopeError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(f"API key for {caller_id!r} added to {keys_file}; it is shown only now:", err=True)
    click.echo(key)
