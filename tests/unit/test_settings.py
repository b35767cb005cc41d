"""Settings come from the environment under each service's prefix, with validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.feature.settings import FeatureSettings


def test_feature_settings_read_their_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_PORT", "6001")
    monkeypatch.setenv("HEMASCOPE_FEATURE_BACKBONE", "resnet50")
    monkeypatch.setenv("HEMASCOPE_FEATURE_RESNET50_CHECKPOINT", str(tmp_path / "r50.pth"))
    monkeypatch.setenv("HEMASCOPE_FEATURE_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("HEMASCOPE_PORT", "7001")  # another prefix: ignored by the feature service
    settings = FeatureSettings()
    assert settings.port == 6001
    assert settings.backbone == "resnet50"
    assert settings.resnet50_checkpoint == tmp_path / "r50.pth"
    assert settings.redis_url == "redis://127.0.0.1:6379/3"


def test_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_PORT", "6001")
    assert FeatureSettings(port=0).port == 0


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEMASCOPE_FEATURE_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="max_batch_size"):
        FeatureSettings()


def test_defaults_embed_offline_without_redis() -> None:
    settings = FeatureSettings()
    assert settings.backbone == "efficientnet_lite0_blood"
    assert settings.redis_url is None
