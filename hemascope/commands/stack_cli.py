"""The click commands ``hemascope up`` and ``hemascope analyze`` (registered in hemascope.cli).

Only click is imported here; gRPC and the client load when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hemascope.commands.addresses import GATEWAY_PORT, address_callback, gateway_address_option


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address of every process.")
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="NAME=PORT",
    help="Port of one process (gateway 50050, feature 50051, classifier 50052, detector 50053, "
    "explain 50054, console 8080 by default); repeatable.",
)
@click.option("--free-ports", is_flag=True, help="Pick free ports for everything (metrics ports too).")
@click.option(
    "--without",
    multiple=True,
    type=click.Choice(["detector", "explain", "console"]),
    help="Do not start this service (the gateway reports its parts as not running) or the research "
    "console; repeatable.",
)
@click.option(
    "--console-users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Who may log in to the console (`hemascope console add-user`); unset: HEMASCOPE_CONSOLE_USERS_FILE "
    "or console-users.jsonl.",
)
@click.option(
    "--console-database-url",
    default=None,
    help="The console's result store; unset: HEMASCOPE_CONSOLE_DATABASE_URL or sqlite:///console.db.",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Model bundle for the classifier and explain services (default: models/bloodcells-5class).",
)
@click.option(
    "--detector-model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Detector ONNX export (default: the committed models/detector-bccd/detector.onnx).",
)
@click.option("--backbone", default=None, help="Feature backbone (default: the bundle's).")
@click.option(
    "--redis-url",
    envvar="HEMASCOPE_REDIS_URL",
    default=None,
    help="Redis for the embedding and explanation caches [env HEMASCOPE_REDIS_URL]; unset: in process.",
)
@click.option(
    "--redis-password-file",
    envvar="HEMASCOPE_REDIS_PASSWORD_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the Redis password (passed to the services in their environment, never on a "
    "command line) [env HEMASCOPE_REDIS_PASSWORD_FILE].",
)
@click.option(
    "--cache-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Secret (>= 32 bytes) sealing every Redis cache value; unset: a random one for this run.",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep a JSON file with every process's address, metrics port, pid and restarts up to date.",
)
@click.option(
    "--api-keys-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: require API keys from this file (`hemascope gateway add-key`); unset: no keys.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: TLS certificate chain (PEM); needs --tls-key. Unset: plaintext.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: private key of --tls-cert (PEM).",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: CA of client certificates; callers must present one (mutual TLS). Needs --tls-cert.",
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: the CA that signed --tls-cert, trusted by up's health check (unset: the certificate "
    "itself, i.e. self-signed).",
)
@click.option(
    "--client-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: client certificate up presents to check its health under mutual TLS (--tls-client-ca).",
)
@click.option(
    "--client-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: private key of --client-cert.",
)
@click.option(
    "--tls-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A folder made by `hemascope tls dev-ca`: the gateway's port in TLS with its certificates, and "
    "mutual TLS between the gateway and every service (admin RPCs only for its admin certificate).",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: append-only, hash-chained audit trail (JSON lines); unset: no audit.",
)
@click.option(
    "--audit-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gateway: secret (>= 32 bytes) that makes the audit chain an HMAC chain. Needs --audit-log.",
)
@click.option(
    "--tracing-endpoint",
    default=None,
    help="Every process exports trace spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); "
    "unset: tracing off.",
)
@click.option(
    "--tracing-sample-ratio",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Share of requests traced (default 1.0); the services follow the gateway's decision.",
)
@click.option("--grace", default=15.0, show_default=True, help="Seconds each process gets to stop.")
@click.option("--max-restarts", default=5, show_default=True, help="Restarts per process in 5 minutes.")
@click.option(
    "--restart-backoff",
    default=1.0,
    show_default=True,
    help="Seconds before the first restart of a crashed process; doubles per restart, at most 30.",
)
@click.option("--start-timeout", default=600.0, show_default=True, help="Seconds to wait for SERVING.")
@click.option("--service-log-level", default="WARNING", show_default=True, help="Log level of the processes.")
def up_command(
    host: str,
    ports: tuple[str, ...],
    free_ports: bool,
    without: tuple[str, ...],
    console_users_file: Path | None,
    console_database_url: str | None,
    bundle: Path | None,
    detector_model: Path | None,
    backbone: str | None,
    redis_url: str | None,
    redis_password_file: Path | None,
    cache_key_file: Path | None,
    state_file: Path | None,
    api_keys_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    tls_ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    tls_dir: Path | None,
    audit_log: Path | None,
    audit_key_file: Path | None,
    tracing_endpoint: str | None,
    tracing_sample_ratio: float | None,
    grace: float,
    max_restarts: int,
    restart_backoff: float,
    start_timeout: float,
    service_log_level: str,
) -> None:
    """Start every service and the gateway as supervised processes; Ctrl-C stops them all."""
    import os

    from hemascope.commands.demo import DEFAULT_BUNDLE
    from hemascope.commands.up import (
        SERVICES,
        GatewaySecurity,
        ServiceTls,
        StackPlan,
        parse_ports,
        run_up,
        temporary_cache_key,
    )
    from hemascope.supervisor import SupervisorConfig

    service_tls = ServiceTls(tls_dir) if tls_dir is not None else None
    if service_tls is not None:
        missing = service_tls.missing()
        if missing:
            raise click.BadParameter(
                f"{tls_dir} lacks {', '.join(p.name for p in missing[:3])}; make the folder with "
                "`hemascope tls dev-ca`",
                param_hint="--tls-dir",
            )
        if tls_cert is None and tls_key is None:
            tls_cert, tls_key = service_tls.cert("gateway"), service_tls.key("gateway")
            tls_ca = tls_ca or service_tls.ca
            if tls_client_ca is not None and client_cert is None:
                client_cert, client_key = service_tls.cert("client"), service_tls.key("client")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise click.UsageError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    if (client_cert is None) != (client_key is None):
        raise click.UsageError("--client-cert and --client-key go together")
    if tls_client_ca is not None and client_cert is None:
        raise click.UsageError(
            "--tls-client-ca (mutual TLS) needs --client-cert and --client-key: up checks the gateway's "
            "health with that certificate"
        )
    if audit_key_file is not None and audit_log is None:
        raise click.UsageError("--audit-key-file needs --audit-log")
    security = GatewaySecurity(
        api_keys_file=api_keys_file,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_client_ca_file=tls_client_ca,
        audit_log=audit_log,
        audit_key_file=audit_key_file,
        tls_ca_file=tls_ca,
        client_cert_file=client_cert,
        client_key_file=client_key,
    )
    port_map, metrics_map = parse_ports(ports, free_ports)
    plan = StackPlan(
        host=host,
        ports=port_map,
        metrics_ports=metrics_map,
        services=[name for name in SERVICES if name not in without],
        bundle=bundle or DEFAULT_BUNDLE,
        detector_model=detector_model,
        backbone=backbone,
        redis_url=redis_url or None,
        redis_password_file=redis_password_file,
        cache_key_file=cache_key_file,
        child_log_level=service_log_level,
        security=security,
        service_tls=service_tls,
        console="console" not in without,
        console_users_file=console_users_file,
        console_database_url=console_database_url,
        tracing_endpoint=tracing_endpoint or None,
        tracing_sample_ratio=tracing_sample_ratio,
    )
    config = SupervisorConfig(grace_s=grace, max_restarts=max_restarts, backoff_initial_s=restart_backoff)
    with temporary_cache_key(plan) as keyed:
        code = run_up(
            keyed, config, state_file=state_file, start_timeout_s=start_timeout, environ=dict(os.environ)
        )
    sys.exit(code)


@click.command("analyze")
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@gateway_address_option()
@click.option("--gateway", "old_address", default=None, hidden=True, callback=address_callback(GATEWAY_PORT))
@click.option("--explain", is_flag=True, help="Explain the classification with a heat map.")
@click.option("--detect", is_flag=True, help="Find the cells on the image (smears).")
@click.option("--no-classify", is_flag=True, help="Skip classification (and explanation): detection only.")
@click.option("--model", "models", multiple=True, help="Classifier model to run (default: all); repeatable.")
@click.option("--explain-model", default="", help="Model to explain (default: the gateway's, LR).")
@click.option(
    "--overlay",
    type=click.Choice(["focus", "jet40"]),
    default="focus",
    show_default=True,
    help="Heat map drawing: focus (colour only where the heat matters, the cell outlined) or jet40 (the "
    "study's JET at 40% over the whole image).",
)
@click.option(
    "--json", "json_lines", is_flag=True, help="One JSON object per image on stdout, every field included."
)
@click.option("--wide", is_flag=True, help="One long line per image with every figure (and timings).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for <image>-overlay.png and <image>-panel.png (--explain) and <image>-boxes.png (--detect).",
)
@click.option("--api-key", envvar="HEMASCOPE_API_KEY", default=None, help="[env HEMASCOPE_API_KEY].")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TLS: CA to trust.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="mTLS: cert.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="mTLS: key.")
@click.option("--tls", "use_tls", is_flag=True, help="TLS with the system's CAs (implied by --ca).")
@click.option("--timeout", type=float, default=None, help="Seconds for the whole run (default: none).")
@click.option("--wait", "wait_s", default=0.0, help="Wait up to N seconds for the gateway to be SERVING.")
def analyze_command(
    images: tuple[Path, ...],
    address: str,
    old_address: str | None,
    explain: bool,
    detect: bool,
    no_classify: bool,
    models: tuple[str, ...],
    explain_model: str,
    overlay: str,
    json_lines: bool,
    wide: bool,
    out: Path | None,
    api_key: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    use_tls: bool,
    timeout: float | None,
    wait_s: float,
) -> None:
    """Analyse IMAGES through the gateway: cell type, malignancy, refer flag; boxes and heat maps on request.

    Exit status 0: all complete; 3: some parts failed (partial reports); 1: some image failed, or the
    gateway could not be reached; 2: a wrong command (bad option, missing or refused API key).
    """
    from hemascope.client import TlsConfig
    from hemascope.commands.analyze import run_analyze
    from hemascope.v1 import analysis_pb2

    if explain and no_classify:
        raise click.UsageError("--explain needs classification: drop --no-classify")
    if no_classify and not detect:
        raise click.UsageError("--no-classify leaves nothing to do: add --detect")
    if out is not None and not (explain or detect):
        raise click.UsageError(
            "--out holds the heat-map pictures (--explain) and the box drawings (--detect): add one of them"
        )
    tls = TlsConfig(ca=ca, cert=cert, key=key) if (use_tls or ca or cert or key) else None
    options = analysis_pb2.AnalyzeOptions(
        models=list(models),
        skip_classification=no_classify,
        detect=detect,
        explain=explain,
        explain_model=explain_model,
        explain_overlay=overlay,
    )
    code = run_analyze(
        list(images),
        gateway=old_address or address,
        api_key=api_key,
        tls=tls,
        options=options,
        out=out,
        json_lines=json_lines,
        timeout=timeout,
        wait_s=wait_s,
        wide=wide,
    )
    sys.exit(code)
