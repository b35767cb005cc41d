"""Adding an acquisition reference to a bundle trained before bundles had one, without refitting its models.

The reference is fitted exactly as ``train classifiers`` fits it (:func:`fit_acquisition`): on the FIT and
CALIBRATION parts of the bundle's own grouped split, recomputed from the same sources and seed. The split
sizes recorded in the manifest must match the recomputed ones, or the sources are not the bundle's and
nothing is written. The result is a new bundle version (the models and their files are unchanged), written
atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hemascope.bundle import MANIFEST, load_bundle
from hemascope.bundle.site import SITE_FILE
from hemascope.errors import FailedPrecondition
from hemascope.files import file_sha256
from hemascope.training.multisource import load_sourced
from hemascope.training.site_reference import fit_acquisition
from hemascope.training.sources import DatasetSpec


def attach_acquisition(
    bundle: Path,
    sources: Sequence[DatasetSpec],
    *,
    cache_dir: Path | None,
    log: Callable[[str], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Fits the reference on the bundle's split of ``sources`` and rewrites ``bundle`` with it."""
    loaded = load_bundle(bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    recorded = manifest.get("training", {}).get("split", {})
    if not recorded:
        raise FailedPrecondition(f"{bundle} records no training split; retrain it with train classifiers")
    sourced = load_sourced(sources, log=log)
    split = sourced.split(int(recorded.get("seed", 50)))
    sizes = {"fit": len(split.fit), "calib": len(split.calib), "test": len(split.test)}
    expected = {k: recorded.get(k) for k in sizes}
    if sizes != expected:
        raise FailedPrecondition(
            f"the sources split into {sizes}, the bundle was trained on {expected}: not the bundle's sources"
        )
    reference, info = fit_acquisition(sourced, sourced.train_rows, split, cache_dir, log)
    previous = loaded.manifest.bundle_version
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.", dir=bundle.parent))
    try:
        shutil.copytree(bundle, staging, dirs_exist_ok=True)
        reference.save(staging / SITE_FILE)
        version = f"{now():%Y%m%dT%H%M%SZ}-{manifest['data_fingerprint'][:8]}"
        manifest |= {
            "bundle_version": version,
            "site_file": SITE_FILE,
            "site_sha256": file_sha256(staging / SITE_FILE),
        }
        manifest["training"]["acquisition"] = info | {"added_to": previous}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        load_bundle(staging)  # verify before it replaces anything
        old = bundle.with_name(f".{bundle.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(bundle, old)
        os.replace(staging, bundle)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"bundle_version": version, "previous_version": previous, "acquisition": info}
