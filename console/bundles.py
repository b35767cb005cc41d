"""Model bundles side by side: the classifier bundles in the console's bundles folder, each with its model
card (facts from its manifest and its ``MODEL_CARD.md``) and its training report's metrics (``results.json``
in the reports folder), and the differences between two of them, metric by metric.

A bundle is named by its folder's name, chosen from the listing; nothing a browser sends becomes a path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_MANIFEST_BYTES = 1 << 20
MAX_CARD_BYTES = 256 << 10
MAX_RESULTS_BYTES = 64 << 20
SAME_WITHIN = 0.0005
"""Metric differences smaller than this (the shown precision) count as no difference."""
OVERALL = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro F1"),
    ("roc_auc", "ROC-AUC"),
    ("malignant_sensitivity", "malignant sensitivity"),
    ("malignant_specificity", "malignant specificity"),
    ("coverage", "coverage, referral on"),
    ("answered_accuracy", "accuracy of the answered"),
)
PER_CLASS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"))
PER_SOURCE = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("referred", "referred"))
_REPORT_ARG = re.compile(r"--report\s+(\S+)")


@dataclass(frozen=True)
class Bundle:
    """One bundle as the comparison shows it."""

    name: str
    manifest: dict[str, Any]
    card: str
    """The text of its MODEL_CARD.md ("" when it has none)."""
    report: str
    """The report folder its metrics come from ("" when none was found)."""
    results: dict[str, Any]
    """The report's results.json ({} when none was found)."""

    @property
    def version(self) -> str:
        return str(self.manifest.get("bundle_version", ""))

    @property
    def report_version(self) -> str:
        return str((self.results.get("bundle") or {}).get("version", ""))


@dataclass(frozen=True)
class Row:
    """One compared value: its names (e.g. model, class, metric) and both bundles' values."""

    keys: tuple[str, ...]
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def state(self) -> str:
        """``same``, ``higher`` or ``lower`` (b against a), or ``missing`` when one has no value."""
        delta = self.delta
        if delta is None:
            return "same" if self.a is None and self.b is None else "missing"
        if abs(delta) < SAME_WITHIN:
            return "same"
        return "higher" if delta > 0 else "lower"


@dataclass(frozen=True)
class Fact:
    """One line of the model cards: what, and its text in each bundle."""

    name: str
    a: str
    b: str

    @property
    def differs(self) -> bool:
        return self.a != self.b


def _read_json(path: Path, limit: int) -> dict[str, Any]:
    if not path.is_file() or path.stat().st_size > limit:
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def list_bundles(bundles_dir: Path) -> list[str]:
    """The classifier bundles in ``bundles_dir``: folders whose manifest names classes and models."""
    if not bundles_dir.is_dir():
        return []
    names = []
    for folder in sorted(bundles_dir.iterdir()):
        manifest = _read_json(folder / "manifest.json", MAX_MANIFEST_BYTES) if folder.is_dir() else {}
        if manifest.get("classes") and manifest.get("models"):
            names.append(folder.name)
    return names


def _report_of(name: str, manifest: Mapping[str, Any], reports_dir: Path) -> tuple[str, dict[str, Any]]:
    """The training report of bundle ``name``: the report folder whose results name the bundle's folder,
    else the one its training command wrote (``--report``)."""
    if not reports_dir.is_dir():
        return "", {}
    candidates = [folder for folder in sorted(reports_dir.iterdir()) if folder.is_dir()]
    command = str((manifest.get("training") or {}).get("command", ""))
    written = _REPORT_ARG.search(command)
    for folder in candidates:
        results = _read_json(folder / "results.json", MAX_RESULTS_BYTES)
        path = str((results.get("bundle") or {}).get("path", ""))
        if results and Path(path).name == name:
            return folder.name, results
    if written is not None:
        folder = reports_dir / Path(written.group(1)).name
        results = _read_json(folder / "results.json", MAX_RESULTS_BYTES)
        if results:
            return folder.name, results
    return "", {}


def load_bundle(bundles_dir: Path, reports_dir: Path, name: str) -> Bundle:
    """The bundle named ``name`` (one of ``list_bundles``); KeyError for any other name."""
    if name not in list_bundles(bundles_dir):
        raise KeyError(name)
    folder = bundles_dir / name
    manifest = _read_json(folder / "manifest.json", MAX_MANIFEST_BYTES)
    card_file = folder / "MODEL_CARD.md"
    card = ""
    if card_file.is_file() and card_file.stat().st_size <= MAX_CARD_BYTES:
        card = card_file.read_text(encoding="utf-8", errors="replace")
    report, results = _report_of(name, manifest, reports_dir)
    return Bundle(name, manifest, card, report, results)


def card_facts(bundle: Bundle) -> dict[str, str]:
    """The facts of a bundle's model card, from its manifest (and its report's split)."""
    m = bundle.manifest
    training = m.get("training") or {}
    split = training.get("split") or bundle.results.get("split") or {}
    sources = training.get("sources") or []
    augmentation = training.get("augmentation") or {}
    return {
        "bundle version": bundle.version,
        "created": str(m.get("created", "")),
        "backbone": f"{m.get('backbone', '')} ({str(m.get('weights_hash', ''))[:12]})",
        "embedding dimension": str(m.get("dimension", "")),
        "preprocessing": str(m.get("preprocessing", "")),
        "classes": ", ".join(map(str, m.get("classes") or [])),
        "malignant classes": ", ".join(map(str, m.get("malignant_classes") or [])),
        "models": ", ".join(sorted(map(str, m.get("models") or {}))),
        "training sources": "; ".join(
            f"{s.get('name')} ({s.get('role')}, {s.get('images')} images)" for s in sources
        ),
        "training sites": ", ".join(map(str, training.get("training_sites") or [])),
        "split: fit / calibration / test": f"{split.get('fit', '')} / {split.get('calib', '')} / "
        f"{split.get('test', '')}",
        "augmented copies": str(augmentation.get("copies", "")),
        "data fingerprint": str(m.get("data_fingerprint", ""))[:16],
        "training report": bundle.report or "none found",
    }


def facts(a: Bundle, b: Bundle) -> list[Fact]:
    fa, fb = card_facts(a), card_facts(b)
    return [Fact(name, fa.get(name, ""), fb.get(name, "")) for name in dict.fromkeys([*fa, *fb])]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def overall(results: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """(model, metric) -> value on the held-out test part."""
    out: dict[tuple[str, ...], float] = {}
    for model, entry in (results.get("models") or {}).items():
        test = entry.get("test") or {}
        referral = (entry.get("referral") or {}).get("test") or {}
        values = {
            **{k: test.get(k) for k in ("accuracy", "macro_f1", "roc_auc")},
            "malignant_sensitivity": (test.get("malignant") or {}).get("sensitivity"),
            "malignant_specificity": (test.get("malignant") or {}).get("specificity"),
            "coverage": referral.get("coverage"),
            "answered_accuracy": referral.get("answered_accuracy"),
        }
        for metric, _ in OVERALL:
            number = _number(values.get(metric))
            if number is not None:
                out[(model, metric)] = number
    return out


def per_class(results: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """(model, class, metric) -> value on the held-out test part."""
    out: dict[tuple[str, ...], float] = {}
    for model, entry in (results.get("models") or {}).items():
        for cls, metrics in ((entry.get("test") or {}).get("per_class") or {}).items():
            for metric, _ in PER_CLASS:
                number = _number(metrics.get(metric))
                if number is not None:
                    out[(model, cls, metric)] = number
    return out


def per_source(results: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """(evaluation, site, model, metric) -> value: the test part per site, the evaluation-only sets, and
    each leave-one-source-out fold (the site held out of training)."""
    out: dict[tuple[str, ...], float] = {}

    def add(kind: str, site: str, model: str, metrics: Mapping[str, Any]) -> None:
        for metric, _ in PER_SOURCE:
            number = _number(metrics.get(metric))
            if number is not None:
                out[(kind, site, model, metric)] = number

    for model, entry in (results.get("models") or {}).items():
        referral = entry.get("referral") or {}
        for site, metrics in (referral.get("test_per_site") or {}).items():
            add("held-out test", site, model, metrics)
        for site, metrics in (referral.get("probe_per_site") or {}).items():
            add("evaluation only", site, model, metrics)
    for site, fold in ((results.get("loso") or {}).get("folds") or {}).items():
        for model, metrics in (fold.get("models") or {}).items():
            add("left out of training", site, model, metrics)
    return out


def compare(a: Mapping[tuple[str, ...], float], b: Mapping[tuple[str, ...], float]) -> list[Row]:
    """Every key of either, in a's order then b's new ones, with both values."""
    keys: Iterable[tuple[str, ...]] = dict.fromkeys([*a, *b])
    return [Row(key, a.get(key), b.get(key)) for key in keys]
