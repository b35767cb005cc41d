"""A real gateway on 127.0.0.1 port 0 whose downstream services are not started: every call is answered by
the gateway itself (health, capabilities with the services down, policies, refusals before any downstream
call)."""

from __future__ import annotations

import socket
from typing import Any

from gateway.server import create_server
from gateway.settings import GatewaySettings
from hemascope.server import ManagedServer

WAIT = 20.0


def closed_port() -> str:
    """An address nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def offline_settings(**overrides: Any) -> GatewaySettings:
    """Gateway settings with every downstream address refusing connections, fast health checks, no retries."""
    dead = closed_port()
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": None,
        "feature_address": dead,
        "classifier_address": dead,
        "detector_address": dead,
        "explain_address": dead,
        "health_timeout_s": 0.5,
        "retries": 0,
    }
    return GatewaySettings(**(base | overrides))


def start_offline_gateway(**overrides: Any) -> tuple[ManagedServer, int]:
    """Starts the gateway with :func:`offline_settings`; the caller stops it."""
    server, port = create_server(offline_settings(**overrides))
    try:
        server.wait_ready(WAIT)
    except BaseException:
        server.stop(0)
        raise
    return server, port
