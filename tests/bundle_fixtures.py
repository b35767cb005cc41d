"""Two classifier bundles and their training reports for the console's comparison, made in a temporary
folder from the shipped bundle's manifest, model card and report: the second one re-versioned, trained on
other sites, and with some of its metrics changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hemascope.data import REPO_ROOT

SHIPPED = REPO_ROOT / "models" / "bloodcells-5class"
SHIPPED_REPORT = REPO_ROOT / "reports" / "bloodcells-5class"


def make_bundles(root: Path) -> tuple[Path, Path]:
    """``root/models/{lab-a,lab-b}`` and ``root/reports/{lab-a,lab-b}``, plus a detector folder (no
    classifier manifest) that the comparison must not list; returns the two folders."""
    models, reports = root / "models", root / "reports"
    for name in ("lab-a", "lab-b"):
        (models / name).mkdir(parents=True)
        (reports / name).mkdir(parents=True)
        shutil.copy(SHIPPED / "MODEL_CARD.md", models / name / "MODEL_CARD.md")
        manifest: dict[str, Any] = json.loads((SHIPPED / "manifest.json").read_text())
        results: dict[str, Any] = json.loads((SHIPPED_REPORT / "results.json").read_text())
        results["bundle"] = {"path": f"models/{name}", "version": manifest["bundle_version"]}
        if name == "lab-b":
            manifest["bundle_version"] = "20270101T000000Z-0000beef"
            manifest["training"]["training_sites"] = ["barcelona", "munich"]
            results["bundle"]["version"] = manifest["bundle_version"]
            svm = results["models"]["svm"]
            svm["test"]["accuracy"] -= 0.05
            svm["test"]["per_class"]["myeloblast"]["f1"] -= 0.1
            svm["referral"]["test_per_site"]["johns-hopkins"]["accuracy"] += 0.02
            del results["models"]["kmeans"]
            (models / name / "MODEL_CARD.md").write_text("# Model card <b>lab B</b>\n")
        (models / name / "manifest.json").write_text(json.dumps(manifest))
        (reports / name / "results.json").write_text(json.dumps(results))
    (models / "detector-x").mkdir()
    (models / "detector-x" / "metrics.json").write_text("{}")
    return models, reports
