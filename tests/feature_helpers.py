"""A feature core loaded in the test process, for tests that embed without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.feature.core import FeatureCore
from services.feature.settings import FeatureSettings


def feature_core(model_cache_dir: Path, **overrides: Any) -> FeatureCore:
    """A loaded FeatureCore (no server or metrics port, one model thread); ``overrides``: other settings."""
    settings = FeatureSettings(
        port=0,
        metrics_port=None,
        log_json=False,
        model_cache_dir=model_cache_dir,
        intra_op_threads=1,
        **overrides,
    )
    core = FeatureCore(settings)
    core.load()
    return core
