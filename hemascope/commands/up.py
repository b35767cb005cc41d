"""``hemascope up``: every service as its own process plus the gateway, supervised.

Starts ``hemascope serve feature|classifier|detector|explain`` on their ports, waits until each answers
its gRPC health check with SERVING, then starts ``hemascope serve gateway`` pointed at them, prints the
addresses and keeps running: a service that crashes is restarted (exponential backoff, a restart limit);
Ctrl-C or SIGTERM stops the gateway first, then the services (SIGTERM, a grace period, then SIGKILL).

Without a Redis URL the feature and explain services keep their caches in process (nothing else to run);
with ``--redis-url`` (or ``HEMASCOPE_REDIS_URL``) both use that Redis, with the password of
``--redis-password-file`` (passed in the environment, never on a command line), and every cached value
sealed with the key of ``--cache-key-file`` (a random one made for this run when not given).

TLS: ``--tls-cert``/``--tls-key`` make the gateway's port TLS (``--tls-client-ca``: mutual TLS), and ``up``
checks the gateway's health over TLS (trusting ``--tls-ca``, or the certificate itself when it is
self-signed; presenting ``--client-cert``/``--client-key`` under mutual TLS). ``--tls-dir`` (made by
``hemascope tls dev-ca``) secures everything: the gateway's port, and mutual TLS between the gateway and
every service, whose administrative RPCs answer only the CA's admin certificate.

Before anything starts, every port is checked: a taken one stops ``up`` at once (exit 2) naming the port,
``--port`` and ``--free-ports``. A service that exits before it is ready stops the whole stack at once with
that service's own last message and exit status. A service left out with ``--without`` is absent for the
gateway too (its address is empty), so the gateway reports it as not running.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

import click

from hemascope.commands.up_security import ADMIN_SUBJECT, GatewaySecurity, ServiceTls
from hemascope.supervisor import ChildFailed, ChildSpec, Supervisor, SupervisorConfig, free_port

__all__ = ["GatewaySecurity", "ServiceTls", "StackPlan", "run_up"]

SERVICES = ("feature", "classifier", "detector", "explain")
DEFAULT_PORTS = {
    "gateway": 50050,
    "feature": 50051,
    "classifier": 50052,
    "detector": 50053,
    "explain": 50054,
    "console": 8080,
}
DEFAULT_METRICS_PORTS = {
    "gateway": 9463,
    "feature": 9464,
    "classifier": 9465,
    "detector": 9466,
    "explain": 9467,
}
# Caches that can live in Redis, by service: the setting is HEMASCOPE_<SERVICE>_REDIS_URL.
REDIS_SERVICES = ("feature", "explain")


@dataclass(frozen=True)
class StackPlan:
    """What ``up`` runs: ports, models, caches."""

    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))
    services: Sequence[str] = SERVICES
    bundle: Path | None = None
    detector_model: Path | None = None
    backbone: str | None = None
    redis_url: str | None = None
    redis_password_file: Path | None = None
    cache_key_file: Path | None = None
    child_log_level: str = "WARNING"
    security: GatewaySecurity = field(default_factory=GatewaySecurity)
    service_tls: ServiceTls | None = None
    console: bool = True
    """Start the research console (HTTP) in front of the gateway."""
    console_users_file: Path | None = None
    console_database_url: str | None = None
    tracing_endpoint: str | None = None
    tracing_sample_ratio: float | None = None


@contextmanager
def temporary_cache_key(plan: StackPlan) -> Iterator[StackPlan]:
    """``plan`` with a cache key: its own, or (with Redis and none given) a random one in a private
    folder that is deleted afterwards."""
    if not plan.redis_url or plan.cache_key_file is not None:
        yield plan
        return
    with tempfile.TemporaryDirectory(prefix="hemascope-up-") as folder:
        key = Path(folder) / "cache.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        yield replace(plan, cache_key_file=key)


def parse_ports(pairs: Sequence[str], free: bool) -> tuple[dict[str, int], dict[str, int]]:
    """``NAME=PORT`` overrides on top of the defaults, or free ports everywhere (metrics included)."""
    grpc_names = ("gateway", *SERVICES)
    names = (*grpc_names, "console")
    ports = {name: free_port() for name in names} if free else dict(DEFAULT_PORTS)
    metrics = {name: free_port() for name in grpc_names} if free else dict(DEFAULT_METRICS_PORTS)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in ports or not value.isdigit():
            raise click.BadParameter(f"{pair!r}: expected NAME=PORT with NAME one of {', '.join(names)}")
        ports[name] = int(value)
    return ports, metrics


def port_taken(host: str, port: int) -> bool:
    """True when ``port`` cannot be bound on ``host`` now (another process listens there)."""
    if port == 0:
        return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(plan: StackPlan) -> list[str]:
    """One line per port of the plan that is taken, naming the process and what to do."""
    problems: list[str] = []
    for name in ("gateway", *plan.services):
        if port_taken(plan.host, plan.ports[name]):
            problems.append(
                f"port {plan.ports[name]} ({name}) on {plan.host} is in use: stop what holds it, choose "
                f"another with --port {name}=PORT, or pick free ports with --free-ports"
            )
        if port_taken(plan.host, plan.metrics_ports[name]):
            problems.append(
                f"metrics port {plan.metrics_ports[name]} ({name}) on {plan.host} is in use: stop what "
                "holds it, or pick free ports with --free-ports"
            )
    if plan.console and port_taken(plan.host, plan.ports["console"]):
        problems.append(
            f"port {plan.ports['console']} (console) on {plan.host} is in use: stop what holds it, choose "
            "another with --port console=PORT, leave the console out with --without console, or pick free "
            "ports with --free-ports"
        )
    return problems


def bundle_embedding(bundle: Path) -> tuple[str | None, str | None]:
    """The backbone and preprocessing option a bundle was trained on (so the feature service ``up`` starts
    makes the embeddings its classifier accepts); ``(None, None)`` when the manifest cannot be read."""
    from hemascope.errors import NotFound
    from hemascope.imaging.preprocess import preprocessing_for_version

    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        backbone, version = str(manifest["backbone"]), str(manifest["preprocessing"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    try:
        return backbone, preprocessing_for_version(version).name
    except NotFound:
        return backbone, None


def _serve_argv(name: str, plan: StackPlan) -> list[str]:
    argv = [sys.executable, "-m", "hemascope", "serve", name, "--host", plan.host]
    argv += ["--port", str(plan.ports[name]), "--metrics-port", str(plan.metrics_ports[name])]
    if name in ("classifier", "explain") and plan.bundle is not None:
        argv += ["--bundle", str(plan.bundle)]
    if name == "detector" and plan.detector_model is not None:
        argv += ["--model", str(plan.detector_model)]
    if name == "feature":
        backbone, option = plan.backbone, None
        if backbone is None and plan.bundle is not None:
            backbone, option = bundle_embedding(plan.bundle)
        argv += ["--backbone", backbone] if backbone else []
        argv += ["--preprocessing", option] if option else []
    if name in REDIS_SERVICES and plan.redis_url:
        argv += ["--redis-url", plan.redis_url]
    return argv


def _env(name: str, plan: StackPlan, environ: Mapping[str, str]) -> dict[str, str]:
    """Console logs at the plan's level and the plan's tracing, unless the operator set them for that
    service; the Redis password and cache key for the services that cache; mutual TLS when the plan has it."""
    prefix = f"HEMASCOPE_{name.upper()}_"
    env: dict[str, str] = {}
    defaults = [("LOG_JSON", "false"), ("LOG_LEVEL", plan.child_log_level)]
    if plan.tracing_endpoint:
        defaults.append(("TRACING_ENDPOINT", plan.tracing_endpoint))
    if plan.tracing_sample_ratio is not None:
        defaults.append(("TRACING_SAMPLE_RATIO", str(plan.tracing_sample_ratio)))
    for key, value in defaults:
        if prefix + key not in environ:
            env[prefix + key] = value
    if name in REDIS_SERVICES and plan.redis_url:
        if plan.redis_password_file is not None:
            env[prefix + "REDIS_PASSWORD"] = read_secret(plan.redis_password_file, "--redis-password-file")
        if plan.cache_key_file is not None:
            env[prefix + "CACHE_KEY_FILE"] = str(plan.cache_key_file.absolute())
    if plan.service_tls is not None and name in SERVICES:
        env |= plan.service_tls.service_environment(name)
    return env


def read_secret(path: Path, option: str) -> str:
    """The text of a secret file (surrounding whitespace removed); click.BadParameter naming ``option``."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None
    if not value:
        raise click.BadParameter(f"{path} is empty", param_hint=option)
    return value


def service_specs(plan: StackPlan, environ: Mapping[str, str]) -> list[ChildSpec]:
    tls = plan.service_tls.health() if plan.service_tls is not None else None
    return [
        ChildSpec(
            name,
            _serve_argv(name, plan),
            plan.ports[name],
            _env(name, plan, environ),
            plan.host,
            plan.metrics_ports[name],
            tls,
        )
        for name in plan.services
    ]


def gateway_spec(plan: StackPlan, environ: Mapping[str, str]) -> ChildSpec:
    """The gateway, told where each service listens (HEMASCOPE_GATEWAY_<SERVICE>_ADDRESS; empty for a
    service left out, which the gateway then reports as not running) and its security settings."""
    env = _env("gateway", plan, environ)
    host = "127.0.0.1" if plan.host in ("0.0.0.0", "") else plan.host
    for name in SERVICES:
        address = f"{host}:{plan.ports[name]}" if name in plan.services else ""
        env[f"HEMASCOPE_GATEWAY_{name.upper()}_ADDRESS"] = address
    env |= plan.security.environment()
    if plan.service_tls is not None:
        env |= plan.service_tls.gateway_environment()
    argv = [sys.executable, "-m", "hemascope", "serve", "gateway", "--host", plan.host]
    argv += ["--port", str(plan.ports["gateway"]), "--metrics-port", str(plan.metrics_ports["gateway"])]
    return ChildSpec(
        "gateway",
        argv,
        plan.ports["gateway"],
        env,
        plan.host,
        plan.metrics_ports["gateway"],
        plan.security.health(),
    )


def console_spec(plan: StackPlan, environ: Mapping[str, str]) -> ChildSpec:
    """The research console, pointed at the gateway (trusting its CA when it speaks TLS); its users file and
    database from the plan, else from HEMASCOPE_CONSOLE_* or the console's defaults."""
    host = "127.0.0.1" if plan.host in ("0.0.0.0", "") else plan.host
    env: dict[str, str] = {"HEMASCOPE_CONSOLE_GATEWAY_ADDRESS": f"{host}:{plan.ports['gateway']}"}
    security = plan.security
    if security.tls_cert_file is not None:
        ca = security.tls_ca_file or security.tls_cert_file
        env["HEMASCOPE_CONSOLE_GATEWAY_CA_FILE"] = str(ca.absolute())
    if plan.console_users_file is not None:
        env["HEMASCOPE_CONSOLE_USERS_FILE"] = str(plan.console_users_file.absolute())
    if plan.console_database_url is not None:
        env["HEMASCOPE_CONSOLE_DATABASE_URL"] = plan.console_database_url
    argv = [sys.executable, "-m", "hemascope", "serve", "console", "--host", plan.host]
    argv += ["--port", str(plan.ports["console"])]
    return ChildSpec(
        "console", argv, plan.ports["console"], env, plan.host, None, http_health_path="/healthz"
    )


def console_unavailable(plan: StackPlan) -> str | None:
    """Why ``up`` cannot start the console for ``plan`` (None: it can)."""
    if plan.security.tls_client_ca_file is not None:
        return "not started: the gateway requires client certificates (mutual TLS), which it does not present"
    return None


def try_commands(plan: StackPlan, gateway: str) -> list[str]:
    """``hemascope analyze`` commands that work against this stack as it was started."""
    flags = f"--address {gateway}"
    security = plan.security
    if security.api_keys_file is not None:
        flags += " --api-key $HEMASCOPE_API_KEY"
    if security.tls_cert_file is not None:
        flags += f" --ca {security.tls_ca_file or security.tls_cert_file}"
        if security.tls_client_ca_file is not None:
            cert = security.client_cert_file or "CLIENT.pem"
            key = security.client_key_file or "CLIENT-KEY.pem"
            flags += f" --cert {cert} --key {key}"
    explain = " --explain" if "explain" in plan.services else ""
    commands = [f"hemascope analyze samples/*.jpg {flags}{explain} --out out/"]
    if "detector" in plan.services:
        commands.append(f"hemascope analyze samples/smear/*.jpg {flags} --detect --no-classify --out out/")
    return commands


def _notes(plan: StackPlan) -> list[str]:
    security, notes = plan.security, []
    if security.api_keys_file is not None:
        notes.append(
            f"API keys: {security.api_keys_file} (set HEMASCOPE_API_KEY to one of its keys, or pass "
            "--api-key; `hemascope gateway add-key` makes one)"
        )
    if security.tls_cert_file is not None:
        mutual = " and a client certificate (--cert/--key)" if security.tls_client_ca_file else ""
        ca = security.tls_ca_file or security.tls_cert_file
        notes.append(f"TLS: clients need the CA {ca} (--ca){mutual}")
    if plan.service_tls is not None:
        notes.append(
            f"services: mutual TLS with the certificates in {plan.service_tls.folder}; administrative RPCs "
            f"answer only its admin certificate (CN {ADMIN_SUBJECT})"
        )
    if security.audit_log is not None:
        notes.append(f"audit trail: {security.audit_log} (`hemascope audit verify` checks it)")
    if plan.console:
        reason = console_unavailable(plan)
        users = plan.console_users_file or "HEMASCOPE_CONSOLE_USERS_FILE (default console-users.jsonl)"
        notes.append(
            f"console: {reason}"
            if reason
            else f"console: log in with a gateway API key listed in {users} (`hemascope console add-user`)"
        )
    absent = [name for name in SERVICES if name not in plan.services]
    if absent:
        notes.append(f"not running: {', '.join(absent)} (the gateway reports those parts as not running)")
    return notes


def _print_addresses(supervisor: Supervisor, plan: StackPlan) -> None:
    click.echo("hemascope is up:")
    for child in supervisor.children():
        metrics = f"metrics :{child.spec.metrics_port}" if child.spec.metrics_port else "no metrics"
        if child.spec.http_health_path is not None:
            metrics = f"http://{child.spec.address}"
        click.echo(f"  {child.spec.name:<11} {child.spec.address:<21} {metrics:<14} pid {child.pid}")
    cache = f"Redis at {redacted(plan.redis_url)}" if plan.redis_url else "in-process (no Redis)"
    click.echo(f"caches: {cache}")
    for note in _notes(plan):
        click.echo(note)
    gateway = supervisor.child("gateway").spec.address
    for command in try_commands(plan, gateway):
        click.echo(f"try: {command}")
    click.echo("Ctrl-C (or SIGTERM) stops them all.", nl=True)
    sys.stdout.flush()


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _start_failed(exc: ChildFailed) -> int:
    """Reports a child that exited before it was ready; returns ``up``'s exit status (the child's)."""
    message = exc.last_message.removeprefix("hemascope: ") or "it printed nothing"
    click.echo(f"hemascope up: {exc}: {message}", err=True)
    click.echo("hemascope up: stopping the others", err=True)
    return exc.exit_code if exc.exit_code > 0 else 1


def run_up(
    plan: StackPlan,
    config: SupervisorConfig,
    *,
    state_file: Path | None,
    start_timeout_s: float,
    environ: Mapping[str, str],
) -> int:
    """Runs the stack until a signal; returns the exit status for the command."""
    problems = taken_ports(plan)
    if problems:
        for problem in problems:
            click.echo(f"hemascope up: {problem}", err=True)
        return 2
    supervisor = Supervisor(config, state_file=state_file)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            for spec in service_specs(plan, environ):
                supervisor.start(spec)
            click.echo(f"starting {', '.join(plan.services)} ...", err=True)
            supervisor.wait_healthy(timeout=start_timeout_s)
            supervisor.start(gateway_spec(plan, environ))
            supervisor.wait_healthy(["gateway"], timeout=start_timeout_s)
            if plan.console and console_unavailable(plan) is None:
                supervisor.start(console_spec(plan, environ))
                supervisor.wait_healthy(["console"], timeout=start_timeout_s)
        except ChildFailed as exc:
            status = _start_failed(exc)
            supervisor.stop()
            return status
        except RuntimeError as exc:
            if supervisor.stop_requested:
                click.echo("stopping before everything was up", err=True)
                supervisor.stop()
                return 0
            click.echo(f"hemascope up: {exc}", err=True)
            supervisor.stop()
            return 1
        supervisor.watch()
        _print_addresses(supervisor, plan)
        supervisor.wait_stop_requested()
        click.echo("stopping ...", err=True)
        codes = supervisor.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    for name, code in codes.items():
        click.echo(f"{name} stopped (exit code {code})", err=True)
    return 1 if unclean else 0
