"""deploy/compose.yaml: Redis requires a password, the caching services get it and the cache key
from secret files (never inline), every setting it names exists, only the gateway's and the console's ports
are published, and the console reaches the gateway alone, over TLS, keeping its results on a volume and
reading the bundles, reports and batch results from read-only mounts its settings name."""

from __future__ import annotations

import re
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
    assert console["volumes"][0] == "console-data:/var/lib/hemascope/console"
    assert console["depends_on"] == {"gateway": {"condition": "service_healthy"}}


SHORT_VOLUME = re.compile(r"(\$\{[^}]*\}|[^:$]+):([^:]+)(?::(ro|rw))?")


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode) of a service's volumes (short syntax)."""
    mounts = {}
    for entry in service["volumes"]:
        match = SHORT_VOLUME.fullmatch(entry)
        assert match, entry
        mounts[match.group(2)] = (match.group(1), match.group(3) or "rw")
    return mounts


def _default_source(source: str) -> Path:
    """A bind mount's host folder when its variable is unset, as compose resolves it (from deploy/)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", source)
    return (COMPOSE.parent / (match.group(1) if match else source)).resolve()


def test_the_console_reads_bundles_reports_and_batch_results_from_read_only_mounts() -> None:
    """Each folder the console's pages only read is a read-only mount its setting names; the jobs' folders
    are on the writable volume (the root file system is read-only)."""
    console = services()["console"]
    env, mounts = console["environment"], _mounts(console)
    for setting in ("BUNDLES_DIR", "REPORTS_DIR", "BATCH_RESULTS_ROOT"):
        path = env[f"HEMASCOPE_CONSOLE_{setting}"]
        assert path in mounts, setting
        source, mode = mounts[path]
        assert mode == "ro", setting
        assert source.startswith("${HEMASCOPE_"), setting  # a deployment points it at its own folder
    assert _default_source(mounts[env["HEMASCOPE_CONSOLE_BUNDLES_DIR"]][0]) == REPO_ROOT / "models"
    assert _default_source(mounts[env["HEMASCOPE_CONSOLE_REPORTS_DIR"]][0]) == REPO_ROOT / "reports"
    volume, mode = mounts["/var/lib/hemascope/console"]
    assert (volume, mode) == ("console-data", "rw")
    assert Path(env["HEMASCOPE_CONSOLE_JOBS_DIR"]).is_relative_to("/var/lib/hemascope/console")
    assert "console-data" in yaml.safe_load(COMPOSE.read_text())["volumes"]


def test_the_console_holds_no_gateway_key_of_its_own() -> None:
    """PromoteBundle (and every other call) is authorised by the key each person logs in with: no API key
    or client certificate is given to the console container, as a setting or a secret."""
    console = services()["console"]
    credentials = ("API_KEY", "API_KEY_FILE", "CERT_FILE", "KEY_FILE")
    for key in console["environment"]:
        assert key == "HEMASCOPE_CONSOLE_SECRET_KEY_FILE" or not key.endswith(credentials), key
    assert not {"api-keys", "tls-key", "tls-cert"} & set(console["secrets"])


def test_secret_files_are_not_in_the_repository() -> None:
    assert not (COMPOSE.parent / "secrets").exists() or not any(Path(COMPOSE.parent / "secrets").iterdir())
