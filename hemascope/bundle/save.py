"""Writing a bundle atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hemascope.bundle.manifest import MANIFEST, Manifest, ModelEntry, ModelKind
from hemascope.bundle.ood import OOD_FILE, OodModel
from hemascope.bundle.site import SITE_FILE, SiteReference
from hemascope.files import file_sha256


@dataclass
class TrainedModel:
    """What training hands to :func:`save_bundle` for one model."""

    estimator: Any
    kind: ModelKind
    version: str
    temperature: float = 1.0
    abstain_threshold: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    ood_threshold: float = 0.0


def _dump(estimator: Any, kind: ModelKind, path: Path) -> None:
    if kind == "xgboost":
        estimator.save_model(str(path))
    else:
        import skops.io as sio

        sio.dump(estimator, path)


def save_bundle(
    target: Path,
    manifest_fields: Mapping[str, Any],
    scaler: Any,
    models: Mapping[str, TrainedModel],
    ood: OodModel | None = None,
    site: SiteReference | None = None,
) -> Manifest:
    """Writes a complete bundle to ``target`` atomically (a half-written bundle is never visible).

    ``ood``, when given, is written as ``ood.npz`` and hashed in the manifest like the models; so is
    ``site`` (the acquisition reference) as ``site.npz``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _dump(scaler, "sklearn", staging / "scaler.skops")
        entries = {}
        for name, model in models.items():
            filename = f"{name}.json" if model.kind == "xgboost" else f"{name}.skops"
            _dump(model.estimator, model.kind, staging / filename)
            entries[name] = ModelEntry(
                name=name,
                kind=model.kind,
                file=filename,
                sha256=file_sha256(staging / filename),
                version=model.version,
                temperature=model.temperature,
                abstain_threshold=model.abstain_threshold,
                metrics=dict(model.metrics),
                extra=dict(model.extra),
                ood_threshold=model.ood_threshold if ood is not None else 0.0,
            )
        ood_fields: dict[str, Any] = {}
        if ood is not None:
            ood.save(staging / OOD_FILE)
            ood_fields = {"ood_file": OOD_FILE, "ood_sha256": file_sha256(staging / OOD_FILE)}
        if site is not None:
            site.save(staging / SITE_FILE)
            ood_fields |= {"site_file": SITE_FILE, "site_sha256": file_sha256(staging / SITE_FILE)}
        manifest = Manifest(
            scaler_file="scaler.skops",
            scaler_sha256=file_sha256(staging / "scaler.skops"),
            models=entries,
            **ood_fields,
            **manifest_fields,
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
