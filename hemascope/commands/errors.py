"""How the per-image commands (``embed``, ``detect``) report one image's failure."""

from __future__ import annotations

import json

import click
import grpc

from hemascope.errors import HemascopeError


def print_image_error(path: str, exc: Exception, as_json: bool) -> None:
    """One line per failed image: a JSON object on stdout with ``--json``, else a message on stderr."""
    if isinstance(exc, grpc.RpcError):
        code, message = exc.code().name, str(exc.details())
    elif isinstance(exc, HemascopeError):
        code, message = exc.code.name, exc.message
    else:
        code, message = type(exc).__name__, str(exc)
    if as_json:
        click.echo(json.dumps({"image": path, "error": {"code": code, "message": message}}))
    else:
        click.echo(f"{path}: error {code}: {message}", err=True)
