"""The ``--address`` option every command that talks to a service shares, and its checks.

One flag name for one concept: ``--address HOST:PORT`` names the server a command talks to. An address
without a port gets the service's default port (``localhost`` means ``localhost:50050`` for the gateway),
never gRPC's own default (443), which no Hemascope service uses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import click

AddressCheck = Callable[[click.Context, click.Parameter, str | None], str | None]
GATEWAY_PORT = 50050


def with_port(address: str, default_port: int) -> str:
    """``address`` with ``default_port`` added when it names a host only (``unix:`` targets unchanged)."""
    address = address.strip()
    if not address or address.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return address
    if address.startswith("["):  # [::1] or [::1]:50050
        return address if "]:" in address else f"{address}:{default_port}"
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        if not port.isdigit() or not host:
            raise click.BadParameter(f"{address!r}: expected HOST:PORT, e.g. 127.0.0.1:{default_port}")
        return address
    if ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise click.BadParameter(
                f"{address!r}: expected HOST:PORT, e.g. 127.0.0.1:{default_port}"
            ) from None
        return f"[{address}]:{default_port}"
    return f"{address}:{default_port}"


def address_callback(default_port: int) -> AddressCheck:
    """A click callback that checks an address option and fills in ``default_port``."""

    def check(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return with_port(value, default_port)
        except click.BadParameter as exc:
            raise click.BadParameter(exc.message, param=param) from None

    return check


def gateway_address_option() -> Callable[[click.decorators.FC], click.decorators.FC]:
    """``--address`` of the gateway, for the commands that call it (``analyze``, ``bundle promote``)."""
    return click.option(
        "--address",
        envvar="HEMASCOPE_GATEWAY_ADDRESS",
        default=f"127.0.0.1:{GATEWAY_PORT}",
        show_default=True,
        callback=address_callback(GATEWAY_PORT),
        help=f"host:port of the gateway (port {GATEWAY_PORT} when left out) [env HEMASCOPE_GATEWAY_ADDRESS].",
    )
