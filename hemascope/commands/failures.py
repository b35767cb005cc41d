"""The CLI's rule for failures: one line saying what was wrong and what to do, never a traceback.

:class:`CliGroup` is the ``hemascope`` group. It turns the errors a user can cause (a wrong setting or
option value, a missing or unusable file, a service that cannot be reached, a refused API key) into one
line on stderr and an exit status: 2 when the command must change, 1 when something failed that the
command could not help. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_FILE_HINTS: dict[type[OSError], str] = {
    FileExistsError: "choose a new or empty folder",
    FileNotFoundError: "check the path",
    NotADirectoryError: "give a folder",
    IsADirectoryError: "give a file, not a folder",
    PermissionError: "check its permissions",
}


def _settings_problem(exc: Exception) -> str:
    """The first problem of a pydantic ValidationError, named as a setting."""
    errors = exc.errors()  # type: ignore[attr-defined]
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "a setting"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid value for {where}: {first.get('msg', exc)}{more}"


def describe_failure(exc: Exception) -> tuple[str, int] | None:
    """(one line, exit status) for an error a user can cause; None for anything else (a bug)."""
    import grpc
    from pydantic import ValidationError

    from hemascope.client import HemascopeClientError
    from hemascope.commands.errors import ServiceUnreachable
    from hemascope.errors import HemascopeError

    if isinstance(exc, ServiceUnreachable):
        return str(exc), EXIT_FAILURE
    if isinstance(exc, HemascopeError):
        internal = exc.code is grpc.StatusCode.INTERNAL
        return exc.message, EXIT_FAILURE if internal else EXIT_USAGE
    if isinstance(exc, ValidationError):
        return _settings_problem(exc), EXIT_USAGE
    for kind, hint in _FILE_HINTS.items():
        if isinstance(exc, kind):
            return f"{exc}: {hint}", EXIT_USAGE
    if isinstance(exc, HemascopeClientError):
        return str(exc), EXIT_FAILURE
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        code, details = exc.code(), exc.details() or ""
        if code is grpc.StatusCode.UNAVAILABLE:
            return (
                f"cannot reach the service ({details}): check --address, or start it "
                "(`hemascope serve ...`, or the whole stack with `hemascope up`)",
                EXIT_FAILURE,
            )
        return f"{code.name}: {details}", EXIT_FAILURE
    return None


def fail(command: str, message: str, status: int) -> NoReturn:
    click.echo(f"hemascope {command}: {message}".replace("hemascope : ", "hemascope: "), err=True)
    sys.exit(status)


class CliGroup(click.Group):
    """A click group whose commands report user errors in one line (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            fail(ctx.invoked_subcommand or "", "interrupted", EXIT_INTERRUPTED)
        except Exception as exc:
            described = describe_failure(exc)
            if described is None:
                raise
            fail(ctx.invoked_subcommand or "", *described)
