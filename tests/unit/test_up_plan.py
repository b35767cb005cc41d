"""What ``hemascope up`` runs: ports, command lines and environment of each process (pure)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest

from hemascope.commands.up import DEFAULT_PORTS, StackPlan, gateway_spec, parse_ports, service_specs


def test_ports_default_overridden_or_free() -> None:
    ports, metrics = parse_ports(("gateway=6000", "detector=6003"), free=False)
    assert ports == {**DEFAULT_PORTS, "gateway": 6000, "detector": 6003}
    assert metrics["gateway"] == 9463
    free, free_metrics = parse_ports((), free=True)
    assert len(set(free.values())) == 5
    assert set(free_metrics.values()) == {0}
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
