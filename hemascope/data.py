"""Where the shared datasets are: ``$HEMASCOPE_DATA_DIR``, else ``../shared/data`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    configured = os.environ.get("HEMASCOPE_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
