"""Settings shared by several services: image limits and the cache (Redis password, sealing key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from hemascope.errors import ConfigurationError
from services.detector.settings import DetectorSettings
from services.explain.settings import ExplainSettings
from services.feature.settings import FeatureSettings


def test_the_redis_password_comes_from_the_setting_or_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("from-file\n")
    assert FeatureSettings(redis_password_file=secret).redis_password_value() == "from-file"
    both = ExplainSettings(redis_password="direct", redis_password_file=secret)
    assert both.redis_password_value() == "direct"
    assert "direct" not in repr(both)  # a secret is never printed with the settings
    assert FeatureSettings().redis_password_value() is None
    with pytest.raises(ConfigurationError, match="cannot read"):
        FeatureSettings(redis_password_file=tmp_path / "absent").redis_password_value()


def test_image_limits_are_one_definition_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls, prefix in (
        (FeatureSettings, "FEATURE"),
        (ExplainSettings, "EXPLAIN"),
        (DetectorSettings, "DETECTOR"),
        (GatewaySettings, "GATEWAY"),
    ):
        monkeypatch.setenv(f"HEMASCOPE_{prefix}_MAX_IMAGE_PIXELS", "1234")
        assert cls().max_image_pixels == 1234  # type: ignore[call-arg]
        assert cls().max_image_bytes == 20 * 1024 * 1024  # type: ignore[call-arg]
