"""How the per-image commands (``embed``, ``detect``) report one image's failure."""

from __future__ import annotations

import json

import click
import grpc

from hemascope.errors import HemascopeError


class ServiceUnreachable(Exception):
    """The service named by ``--address`` cannot be reached: no point trying the other images."""

    def __init__(self, service: str, address: str, exc: grpc.RpcError) -> None:
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        super().__init__(
            f"cannot reach the {service} service at {address} ({_unreachable_reason(details or '')}): "
            f"start it with `hemascope serve {service}`, or check --address"
        )


def check_reachable(exc: Exception, service: str, address: str | None) -> None:
    """Raises :class:`ServiceUnreachable` when ``exc`` says the service at ``address`` did not answer."""
    if (
        address
        and isinstance(exc, grpc.RpcError)
        and isinstance(exc, grpc.Call)
        and exc.code() is grpc.StatusCode.UNAVAILABLE
    ):
        raise ServiceUnreachable(service, address, exc) from None


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


def _unreachable_reason(message: str) -> str:
    lowered = message.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("dns resolution failed", "unknown host"),
        ("handshake", "TLS handshake failed"),
        ("socket closed", "connection closed"),
        ("deadline", "no answer in time"),
    ):
        if needle in lowered:
            return reason
    return message


def gateway_failure(exc: Exception, address: str, *, api_key: bool, tls: bool) -> tuple[str, int]:
    """One line saying what went wrong talking to the gateway at ``address`` and what to do, and the
    command's exit status (2 when the caller must change the command, 1 otherwise)."""
    from hemascope.client import HemascopeClientError

    if not isinstance(exc, HemascopeClientError):
        return str(exc), 1
    code = exc.code
    if code is grpc.StatusCode.UNAUTHENTICATED:
        if api_key:
            return f"the gateway at {address} refused the API key: check --api-key (or HEMASCOPE_API_KEY)", 2
        return f"the gateway at {address} needs an API key: pass --api-key KEY or set HEMASCOPE_API_KEY", 2
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return f"the gateway at {address} refused this caller: {exc.message}", 2
    if code is grpc.StatusCode.UNAVAILABLE:
        reason = _unreachable_reason(exc.message)
        hint = "start the stack with `hemascope up`, check --address, or wait for it with --wait SECONDS"
        if not tls and reason not in ("connection refused", "unknown host"):
            hint += " (a gateway with TLS also needs --ca)"
        return f"cannot reach the gateway at {address} ({reason}): {hint}", 1
    return f"{code.name}: {exc.message}", 1


def not_ready_message(address: str, seconds: float) -> str:
    """The gateway did not answer SERVING within ``--wait``."""
    return (
        f"the gateway at {address} was not ready after {seconds:g} s: start the stack with `hemascope up` "
        "(its first start takes a minute or two), check --address, or wait longer with --wait SECONDS"
    )
