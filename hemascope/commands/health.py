"""``hemascope health ADDRESS``: one gRPC health check (``grpc.health.v1.Health/Check``), exit 0 or 1.

The container images' HEALTHCHECK and the gateway's Kubernetes exec probes run it (Kubernetes' native
``grpc:`` probes cannot speak TLS, and the gateway's port may be TLS-only). Exit codes:

* 0: the server answered SERVING;
* 1: anything else (NOT_SERVING or SERVICE_UNKNOWN, no answer within the timeout, refused connection,
  TLS failure), with one line on stderr saying which.

It imports only grpc and the health stubs, so it also runs as ``python -m hemascope.commands.health`` where
starting the full CLI would cost more than a probe should.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_SERVING = 0
EXIT_UNHEALTHY = 1


def check_health(
    address: str,
    *,
    service: str = "",
    timeout: float = 3.0,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """(serving, what happened) for one Check call on ``address``; TLS when ``ca_file`` is given."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert and --key go together")
    if cert_file is not None and ca_file is None:
        raise click.UsageError("--cert/--key (mutual TLS) need --ca")
    options: list[tuple[str, str]] = []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if ca_file is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes(),
            private_key=key_file.read_bytes() if key_file is not None else None,
            certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        return False, f"{address}: health check failed: {name}"
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def _file(path: str | None) -> Path | None:
    return Path(path) if path else None


@click.command("health")
@click.argument("address")
@click.option("--service", default="", help="Service name to ask about (default: the whole server).")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False), default=None, help="TLS: PEM CA bundle.")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False), default=None, help="mTLS: client cert.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False), default=None, help="mTLS: client key.")
@click.option("--server-name", default=None, help="TLS: name expected in the server certificate.")
@click.option("--quiet", is_flag=True, help="Print nothing when the server is SERVING.")
def health_command(
    address: str,
    service: str,
    timeout: float,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    server_name: str | None,
    quiet: bool,
) -> None:
    """Ask the gRPC server at ADDRESS (host:port) whether it is SERVING; exit 0 if so, else 1."""
    try:
        serving, message = check_health(
            address,
            service=service,
            timeout=timeout,
            ca_file=_file(ca_file),
            cert_file=_file(cert_file),
            key_file=_file(key_file),
            server_name=server_name,
        )
    except OSError as exc:
        click.echo(f"{address}: cannot read a TLS file: {exc}", err=True)
        sys.exit(EXIT_UNHEALTHY)
    if not serving:
        click.echo(message, err=True)
        sys.exit(EXIT_UNHEALTHY)
    if not quiet:
        click.echo(message)


if __name__ == "__main__":
    health_command(prog_name="hemascope health")
