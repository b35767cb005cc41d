"""deploy/compose.yaml: Redis requires a password, the caching services get it and the cache key
from secret files (never inline), every setting it names exists, only the gateway's and the console's ports
are published, and the console reaches the gateway alone, over TLS, keeping its results on a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from console.settings import ConsoleSettings
from gateway.settings import GatewaySettings
from hemascope.data import REPO_ROOT
from services.classifier.settings import ClassifierSettings
from services.detector.settings import DetectorSettings
from services.explain.settings import ExplainSettings
from services.feature.settings import FeatureSettings

COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
SETTINGS: dict[str, Any] = {
    "feature": FeatureSettings,
    "classifier": ClassifierSettings,
    "detector": DetectorSettings,
    "explain": ExplainSettings,
    "gateway": GatewaySettings,
    "console": ConsoleSettings,
}


def services() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    return dict(loaded["services"])


def test_redis_requires_the_password_from_its_secret_file() -> None:
    redis = services()["redis"]
    command = " ".join(redis["command"])
    assert '--requirepass "$$(cat /run/secrets/redis-password)"' in command
    assert redis["secrets"] == ["redis-password"]
    assert "ports" not in redis


def test_caching_services_get_the_password_and_cache_key_as_files() -> None:
    for name in ("feature", "explain"):
        service = services()[name]
        env = service["environment"]
        prefix = f"HEMASCOPE_{name.upper()}_"
        assert "@" not in env[prefix + "REDIS_URL"]
        assert env[prefix + "REDIS_PASSWORD_FILE"] == "/run/secrets/redis-password"
        assert env[prefix + "CACHE_KEY_FILE"] == "/run/secrets/cache-key"
        assert set(service["secrets"]) == {"redis-password", "cache-key"}


def test_every_setting_named_exists_and_only_the_gateway_and_console_are_published() -> None:
    for name, service in services().items():
        if name in SETTINGS:
            fields = SETTINGS[name].model_fields
            prefix = f"HEMASCOPE_{name.upper()}_"
            for key in service.get("environment", {}):
                assert key.startswith(prefix) and key.removeprefix(prefix).lower() in fields, key
        assert ("ports" in service) == (name in ("gateway", "console")), name
    assert services()["gateway"]["ports"] == ["${HEMASCOPE_GATEWAY_PUBLISH:-127.0.0.1:50050}:50050"]
    assert services()["console"]["ports"] == ["${HEMASCOPE_CONSOLE_PUBLISH:-127.0.0.1:8080}:8080"]


def test_the_console_talks_to_the_gateway_only_over_tls_and_keeps_results_on_a_volume() -> None:
    console = services()["console"]
    env = console["environment"]
    assert env["HEMASCOPE_CONSOLE_GATEWAY_ADDRESS"] == "gateway:50050"
    assert env["HEMASCOPE_CONSOLE_GATEWAY_CA_FILE"] == "/run/secrets/tls-ca"
    assert env["HEMASCOPE_CONSOLE_USERS_FILE"] == "/run/secrets/console-users"
    assert env["HEMASCOPE_CONSOLE_SECRET_KEY_FILE"] == "/run/secrets/console-secret"
    assert set(console["secrets"]) == {"tls-ca", "console-users", "console-secret"}
    assert console["networks"] == ["frontend"]  # not on the services' backend network
    assert console["read_only"] is True
    assert console["volumes"] == ["console-data:/var/lib/hemascope/console"]
    assert console["depends_on"] == {"gateway": {"condition": "service_healthy"}}


def test_secret_files_are_not_in_the_repository() -> None:
    assert not (COMPOSE.parent / "secrets").exists() or not any(Path(COMPOSE.parent / "secrets").iterdir())
