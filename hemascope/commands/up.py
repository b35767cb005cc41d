"""``hemascope up``: every service as its own process plus the gateway, supervised.

Starts ``hemascope serve feature|classifier|detector|explain`` on their ports, waits until each answers
its gRPC health check with SERVING, then starts ``hemascope serve gateway`` pointed at them, prints the
addresses and keeps running: a service that crashes is restarted (exponential backoff, a restart limit);
Ctrl-C or SIGTERM stops the gateway first, then the services (SIGTERM, a grace period, then SIGKILL).

Without a Redis URL the feature and explain services keep their caches in process (nothing else to run);
with ``--redis-url`` (or ``HEMASCOPE_REDIS_URL``) both use that Redis.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from hemascope.supervisor import ChildSpec, Supervisor, SupervisorConfig, free_port

SERVICES = ("feature", "classifier", "detector", "explain")
DEFAULT_PORTS = {"gateway": 50050, "feature": 50051, "classifier": 50052, "detector": 50053, "explain": 50054}
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
    child_log_level: str = "WARNING"


def parse_ports(pairs: Sequence[str], free: bool) -> tuple[dict[str, int], dict[str, int]]:
    """``NAME=PORT`` overrides on top of the defaults, or free ports everywhere (metrics on port 0)."""
    names = ("gateway", *SERVICES)
    ports = {name: free_port() for name in names} if free else dict(DEFAULT_PORTS)
    metrics = dict.fromkeys(names, 0) if free else dict(DEFAULT_METRICS_PORTS)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in ports or not value.isdigit():
            raise click.BadParameter(f"{pair!r}: expected NAME=PORT with NAME one of {', '.join(names)}")
        ports[name] = int(value)
    return ports, metrics


def _serve_argv(name: str, plan: StackPlan) -> list[str]:
    argv = [sys.executable, "-m", "hemascope", "serve", name, "--host", plan.host]
    argv += ["--port", str(plan.ports[name]), "--metrics-port", str(plan.metrics_ports[name])]
    if name in ("classifier", "explain") and plan.bundle is not None:
        argv += ["--bundle", str(plan.bundle)]
    if name == "detector" and plan.detector_model is not None:
        argv += ["--model", str(plan.detector_model)]
    if name == "feature" and plan.backbone:
        argv += ["--backbone", plan.backbone]
    if name in REDIS_SERVICES and plan.redis_url:
        argv += ["--redis-url", plan.redis_url]
    return argv


def _env(name: str, plan: StackPlan, environ: Mapping[str, str]) -> dict[str, str]:
    """Console logs at the plan's level, unless the operator set them for that service."""
    prefix = f"HEMASCOPE_{name.upper()}_"
    env: dict[str, str] = {}
    for key, value in (("LOG_JSON", "false"), ("LOG_LEVEL", plan.child_log_level)):
        if prefix + key not in environ:
            env[prefix + key] = value
    return env


def service_specs(plan: StackPlan, environ: Mapping[str, str]) -> list[ChildSpec]:
    return [
        ChildSpec(name, _serve_argv(name, plan), plan.ports[name], _env(name, plan, environ), plan.host)
        for name in plan.services
    ]


def gateway_spec(plan: StackPlan, environ: Mapping[str, str]) -> ChildSpec:
    """The gateway, told where each service listens (HEMASCOPE_GATEWAY_<SERVICE>_ADDRESS)."""
    env = _env("gateway", plan, environ)
    host = "127.0.0.1" if plan.host in ("0.0.0.0", "") else plan.host
    for name in SERVICES:
        env[f"HEMASCOPE_GATEWAY_{name.upper()}_ADDRESS"] = f"{host}:{plan.ports[name]}"
    argv = [sys.executable, "-m", "hemascope", "serve", "gateway", "--host", plan.host]
    argv += ["--port", str(plan.ports["gateway"]), "--metrics-port", str(plan.metrics_ports["gateway"])]
    return ChildSpec("gateway", argv, plan.ports["gateway"], env, plan.host)


def _print_addresses(supervisor: Supervisor, redis_url: str | None) -> None:
    click.echo("hemascope is up:")
    for child in supervisor.children():
        click.echo(f"  {child.spec.name:<11} {child.spec.address:<21} pid {child.pid}")
    cache = f"Redis at {redis_url}" if redis_url else "in-process (no Redis)"
    click.echo(f"caches: {cache}")
    gateway = supervisor.child("gateway").spec.address
    click.echo(f"try: hemascope analyze samples/*.jpg --gateway {gateway} --explain --detect --out out/")
    click.echo("Ctrl-C (or SIGTERM) stops them all.", nl=True)
    sys.stdout.flush()


def run_up(
    plan: StackPlan,
    config: SupervisorConfig,
    *,
    state_file: Path | None,
    start_timeout_s: float,
    environ: Mapping[str, str],
) -> int:
    """Runs the stack until a signal; returns the exit status for the command."""
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
        except RuntimeError as exc:
            if supervisor.stop_requested:
                click.echo("stopping before everything was up", err=True)
                supervisor.stop()
                return 0
            click.echo(f"hemascope up: {exc}", err=True)
            supervisor.stop()
            return 1
        supervisor.watch()
        _print_addresses(supervisor, plan.redis_url)
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
