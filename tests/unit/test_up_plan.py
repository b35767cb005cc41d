"""What ``hemascope up`` runs: ports, command lines and environment of each process (pure)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import click
import pytest

from hemascope.commands.up import (
    DEFAULT_PORTS,
    GatewaySecurity,
    StackPlan,
    console_spec,
    gateway_spec,
    parse_ports,
    service_specs,
    taken_ports,
    try_commands,
)
from hemascope.imaging.preprocess import get_preprocessing


def test_ports_default_overridden_or_free() -> None:
    ports, metrics = parse_ports(("gateway=6000", "detector=6003"), free=False)
    assert ports == {**DEFAULT_PORTS, "gateway": 6000, "detector": 6003}
    assert metrics["gateway"] == 9463
    free, free_metrics = parse_ports((), free=True)
    assert len(set(free.values())) == 6  # the console's too
    assert len(set(free_metrics.values()) - set(free.values())) == 5  # known, so they can be printed
    assert 0 not in free_metrics.values()
    for bad in ("gateway", "nosuch=1", "feature=x"):
        with pytest.raises(click.BadParameter):
            parse_ports((bad,), free=False)


def test_service_command_lines_and_environment(tmp_path: Path) -> None:
    plan = StackPlan(
        bundle=tmp_path / "bundle",
        detector_model=tmp_path / "d.onnx",
        backbone="resnet50",
        redis_url="redis://r:6379/1",
        services=("feature", "classifier", "detector", "explain"),
    )
    specs = {spec.name: spec for spec in service_specs(plan, {"HEMASCOPE_FEATURE_LOG_LEVEL": "DEBUG"})}
    feature = specs["feature"]
    assert feature.argv[:5] == [sys.executable, "-m", "hemascope", "serve", "feature"]
    assert feature.argv[feature.argv.index("--port") + 1] == "50051"
    assert feature.argv[feature.argv.index("--backbone") + 1] == "resnet50"
    assert feature.argv[feature.argv.index("--redis-url") + 1] == "redis://r:6379/1"
    assert "HEMASCOPE_FEATURE_LOG_LEVEL" not in feature.env  # the operator's setting wins
    assert feature.env["HEMASCOPE_FEATURE_LOG_JSON"] == "false"
    assert "--redis-url" not in specs["classifier"].argv
    assert specs["classifier"].argv[specs["classifier"].argv.index("--bundle") + 1] == str(
        tmp_path / "bundle"
    )
    assert specs["explain"].argv[specs["explain"].argv.index("--redis-url") + 1] == "redis://r:6379/1"
    assert specs["detector"].argv[specs["detector"].argv.index("--model") + 1] == str(tmp_path / "d.onnx")
    assert specs["detector"].env["HEMASCOPE_DETECTOR_LOG_LEVEL"] == "WARNING"


def test_gateway_is_pointed_at_every_service() -> None:
    plan = StackPlan(host="0.0.0.0")
    spec = gateway_spec(plan, {})
    assert spec.argv[4:] == ["gateway", "--host", "0.0.0.0", "--port", "50050", "--metrics-port", "9463"]
    assert spec.address == "127.0.0.1:50050"
    assert spec.env["HEMASCOPE_GATEWAY_FEATURE_ADDRESS"] == "127.0.0.1:50051"
    assert spec.env["HEMASCOPE_GATEWAY_EXPLAIN_ADDRESS"] == "127.0.0.1:50054"


def test_every_process_carries_its_metrics_port() -> None:
    plan = StackPlan()
    assert {spec.name: spec.metrics_port for spec in service_specs(plan, {})} == {
        "feature": 9464,
        "classifier": 9465,
        "detector": 9466,
        "explain": 9467,
    }
    assert gateway_spec(plan, {}).metrics_port == 9463


def test_a_service_left_out_has_an_empty_address_for_the_gateway() -> None:
    plan = StackPlan(services=("feature", "classifier", "detector"))
    env = gateway_spec(plan, {}).env
    assert env["HEMASCOPE_GATEWAY_EXPLAIN_ADDRESS"] == ""
    assert env["HEMASCOPE_GATEWAY_DETECTOR_ADDRESS"] == "127.0.0.1:50053"
    commands = try_commands(plan, "127.0.0.1:50050")
    assert not any("--explain" in command for command in commands)
    assert any("--detect" in command for command in commands)
    without_detector = try_commands(StackPlan(services=("feature", "classifier")), "127.0.0.1:50050")
    assert not any("--detect" in command or "--explain" in command for command in without_detector)


def test_keys_tls_and_audit_reach_the_gateway_and_the_hint(tmp_path: Path) -> None:
    security = GatewaySecurity(
        api_keys_file=tmp_path / "keys.json",
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server-key.pem",
        audit_log=tmp_path / "audit.jsonl",
    )
    plan = StackPlan(security=security)
    env = gateway_spec(plan, {}).env
    assert env["HEMASCOPE_GATEWAY_API_KEYS_FILE"] == str(tmp_path / "keys.json")
    assert env["HEMASCOPE_GATEWAY_TLS_CERT_FILE"] == str(tmp_path / "server.pem")
    assert env["HEMASCOPE_GATEWAY_TLS_KEY_FILE"] == str(tmp_path / "server-key.pem")
    assert env["HEMASCOPE_GATEWAY_AUDIT_LOG"] == str(tmp_path / "audit.jsonl")
    assert "HEMASCOPE_GATEWAY_TLS_CLIENT_CA_FILE" not in env
    first = try_commands(plan, "127.0.0.1:50050")[0]
    assert "--address 127.0.0.1:50050" in first
    assert "--api-key" in first and "--ca" in first
    assert "HEMASCOPE_GATEWAY_API_KEYS_FILE" not in gateway_spec(StackPlan(), {}).env


def test_taken_ports_name_the_process_and_the_way_out() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports, metrics = parse_ports((f"classifier={port}",), free=True)
        problems = taken_ports(StackPlan(ports=ports, metrics_ports=metrics))
    assert len(problems) == 1
    assert f"port {port} (classifier)" in problems[0]
    assert "--port classifier=PORT" in problems[0] and "--free-ports" in problems[0]


def test_the_feature_service_runs_the_backbone_and_preprocessing_of_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    version = get_preprocessing("cellcrop-gray").version
    (bundle / "manifest.json").write_text(
        json.dumps({"backbone": "efficientnet_lite0_blood", "preprocessing": version})
    )
    feature = service_specs(StackPlan(bundle=bundle, services=("feature",)), {})[0]
    assert feature.argv[feature.argv.index("--backbone") + 1] == "efficientnet_lite0_blood"
    assert feature.argv[feature.argv.index("--preprocessing") + 1] == "cellcrop-gray"
    chosen = service_specs(StackPlan(bundle=bundle, backbone="resnet50", services=("feature",)), {})[0]
    assert (
        chosen.argv[chosen.argv.index("--backbone") + 1] == "resnet50"
        and "--preprocessing" not in chosen.argv
    )
    unreadable = service_specs(StackPlan(bundle=tmp_path / "none", services=("feature",)), {})[0]
    assert "--backbone" not in unreadable.argv and "--preprocessing" not in unreadable.argv


def test_the_console_is_pointed_at_the_gateway_and_checked_over_http(tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    plan = StackPlan(
        ports={**DEFAULT_PORTS, "gateway": 6000, "console": 6080},
        console_users_file=users,
        console_database_url="sqlite:///x.db",
        security=GatewaySecurity(tls_cert_file=tmp_path / "gw.pem", tls_key_file=tmp_path / "gw.key"),
    )
    spec = console_spec(plan, {})
    assert spec.argv[-6:] == ["serve", "console", "--host", "127.0.0.1", "--port", "6080"]
    assert spec.http_health_path == "/healthz" and spec.metrics_port is None
    assert spec.env["HEMASCOPE_CONSOLE_GATEWAY_ADDRESS"] == "127.0.0.1:6000"
    assert spec.env["HEMASCOPE_CONSOLE_GATEWAY_CA_FILE"] == str((tmp_path / "gw.pem").absolute())
    assert spec.env["HEMASCOPE_CONSOLE_USERS_FILE"] == str(users.absolute())
    assert spec.env["HEMASCOPE_CONSOLE_DATABASE_URL"] == "sqlite:///x.db"
    plain = console_spec(StackPlan(), {})
    assert "HEMASCOPE_CONSOLE_GATEWAY_CA_FILE" not in plain.env
    assert "HEMASCOPE_CONSOLE_USERS_FILE" not in plain.env  # the console's own setting or default


def test_a_taken_console_port_names_the_way_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        ports, metrics = parse_ports((), free=True)
        plan = StackPlan(ports={**ports, "console": taken}, metrics_ports=metrics)
        problems = taken_ports(plan)
        assert len(problems) == 1 and "--without console" in problems[0] and str(taken) in problems[0]
        assert (
            taken_ports(StackPlan(ports={**ports, "console": taken}, metrics_ports=metrics, console=False))
            == []
        )


def test_tracing_reaches_every_process_unless_set_for_one() -> None:
    plan = StackPlan(tracing_endpoint="http://127.0.0.1:4317", tracing_sample_ratio=0.5)
    own = {"HEMASCOPE_DETECTOR_TRACING_ENDPOINT": "http://elsewhere:4317"}
    envs = {spec.name: spec.env for spec in [*service_specs(plan, own), gateway_spec(plan, own)]}
    assert set(envs) == {"feature", "classifier", "detector", "explain", "gateway"}
    for name, env in envs.items():
        prefix = f"HEMASCOPE_{name.upper()}_"
        assert env[prefix + "TRACING_SAMPLE_RATIO"] == "0.5"
        if name == "detector":
            assert prefix + "TRACING_ENDPOINT" not in env  # the operator's own setting stands
        else:
            assert env[prefix + "TRACING_ENDPOINT"] == "http://127.0.0.1:4317"
    off = [spec.env for spec in [*service_specs(StackPlan(), {}), gateway_spec(StackPlan(), {})]]
    assert not any("TRACING" in key for env in off for key in env)


def test_the_gateway_presents_the_dev_cas_admin_certificate_for_promotions(tmp_path: Path) -> None:
    from hemascope.commands.up_security import ServiceTls

    tls = ServiceTls(tmp_path)
    assert "HEMASCOPE_GATEWAY_ADMIN_CERT_FILE" not in tls.gateway_environment()
    (tmp_path / "admin.pem").write_text("cert")
    (tmp_path / "admin-key.pem").write_text("key")
    env = tls.gateway_environment()
    assert env["HEMASCOPE_GATEWAY_ADMIN_CERT_FILE"] == str((tmp_path / "admin.pem").absolute())
    assert env["HEMASCOPE_GATEWAY_ADMIN_KEY_FILE"] == str((tmp_path / "admin-key.pem").absolute())
    assert env["HEMASCOPE_GATEWAY_DOWNSTREAM_CERT_FILE"] == str((tmp_path / "gateway.pem").absolute())
