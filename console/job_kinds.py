"""What the Jobs page may run: ``hemascope train classifiers``, ``hemascope evaluate`` and ``hemascope site
validate``, on datasets found under the allow-listed data root and bundles found in the bundles folder (or
written by the console's own training jobs). A form names a dataset or bundle by its entry in those lists,
never by a free path: every name is resolved (symlinks followed) and refused unless it lands inside its
root, and then unless it is one of the listed entries."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemascope.training.sources import SourceSpecError, load_spec

KINDS = {
    "train": "Train classifiers",
    "evaluate": "Evaluate a bundle",
    "validate": "Validate a bundle for a site",
}
MODELS = ("logistic_regression", "svm", "random_forest", "xgboost", "kmeans")
"""The models `hemascope train classifiers` trains (its --models; the CLI checks them again)."""
BACKBONES = ("efficientnet_lite0_blood", "efficientnet_lite0")
SPEC_SUFFIXES = (".yaml", ".yml")
BUNDLE_MANIFEST = "manifest.json"
SITE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
WHOLE = re.compile(r"[0-9]{1,6}")


class JobRefused(ValueError):
    """A job request naming something outside the allow-list, or with a malformed option."""


def inside(root: Path, name: str) -> Path:
    """``root/name`` resolved (symlinks followed); JobRefused unless it lies strictly inside ``root``."""
    if not name or "\x00" in name:
        raise JobRefused("no dataset or bundle was chosen")
    base = root.resolve()
    candidate = (base / name).resolve()
    if candidate == base or not candidate.is_relative_to(base):
        raise JobRefused(f"{name!r} is not inside the allowed folder")
    return candidate


def _is_dataset(path: Path) -> bool:
    """A folder-per-class dataset: a folder holding at least one (class) folder."""
    try:
        children = list(path.iterdir()) if path.is_dir() else []
    except OSError:
        return False
    return any(child.is_dir() and not child.name.startswith(".") for child in children)


def _spec_inside(path: Path, root: Path) -> bool:
    """A YAML dataset spec whose every dataset root, as the CLI resolves it, lies inside ``root``."""
    try:
        specs = load_spec(path)
    except (SourceSpecError, OSError, ValueError, TypeError, AttributeError):
        return False
    base = root.resolve()
    return bool(specs) and all(s.root.resolve().is_relative_to(base) for s in specs)


@dataclass(frozen=True)
class Catalogue:
    """The datasets and bundles a job may name."""

    data_root: Path | None
    bundles_dir: Path
    jobs_dir: Path

    def _entries(self, root: Path | None) -> list[tuple[str, Path]]:
        if root is None or not root.is_dir():
            return []
        found = []
        for child in sorted(root.iterdir()):
            if child.name.startswith("."):
                continue
            try:
                found.append((child.name, inside(root, child.name)))
            except JobRefused:
                continue  # a symlink leading out of the root is not offered
        return found

    def datasets(self) -> list[str]:
        """Folder-per-class datasets directly under the data root."""
        return [name for name, path in self._entries(self.data_root) if _is_dataset(path)]

    def specs(self) -> list[str]:
        """YAML dataset specs directly under the data root whose datasets all lie inside it."""
        root = self.data_root
        if root is None:
            return []
        return [
            name
            for name, path in self._entries(root)
            if path.suffix in SPEC_SUFFIXES and path.is_file() and _spec_inside(path, root)
        ]

    def bundles(self, trained: list[int]) -> dict[str, Path]:
        """Bundles by choice value: ``models/NAME`` in the bundles folder, ``job-N`` for the bundle that
        training job N wrote (``trained``: the ids of succeeded training jobs)."""
        found = {
            f"models/{name}": path
            for name, path in self._entries(self.bundles_dir)
            if (path / BUNDLE_MANIFEST).is_file()
        }
        for job_id in trained:
            try:
                path = inside(self.jobs_dir, f"{job_id}/bundle")
            except JobRefused:
                continue
            if (path / BUNDLE_MANIFEST).is_file():
                found[f"job-{job_id}"] = path
        return found

    def dataset_option(self, choice: str, allow_spec: bool) -> list[str]:
        """``--data NAME=PATH`` or ``--sources SPEC`` for a dataset choice; JobRefused for any other."""
        if self.data_root is None:
            raise JobRefused("no data root is configured (HEMASCOPE_CONSOLE_DATA_ROOT)")
        path = inside(self.data_root, choice)
        if choice in self.datasets():
            return ["--data", f"{SITE_NAME.sub('-', choice)}={path}"]
        if allow_spec and choice in self.specs():
            return ["--sources", str(path)]
        raise JobRefused(f"{choice!r} is not one of the datasets on offer")

    def bundle_path(self, choice: str, trained: list[int]) -> Path:
        bundles = self.bundles(trained)
        if choice not in bundles:
            raise JobRefused(f"{choice!r} is not one of the bundles on offer")
        return bundles[choice]


@dataclass(frozen=True)
class Plan:
    """A job ready to queue: what was chosen (shown on the page) and the command line to run."""

    kind: str
    choices: dict[str, Any]
    argv: list[str]


def _int(form: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = (form.get(name) or "").strip() or str(default)
    if not WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        raise JobRefused(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def plan_job(
    kind: str, form: Mapping[str, str], models: list[str], catalogue: Catalogue, trained: list[int]
) -> Plan:
    """The command for a job of ``kind`` from the form's fields (``models``: the models ticked, for
    training); JobRefused for anything not allowed. It runs in its own job folder and writes there
    (``bundle/``, ``report/``; ``evaluate`` prints its metrics as JSON on stdout)."""
    if kind not in KINDS:
        raise JobRefused(f"unknown job kind {kind!r}")
    hemascope = [sys.executable, "-m", "hemascope"]
    dataset = form.get("dataset") or ""
    if kind == "train":
        data = catalogue.dataset_option(dataset, allow_spec=True)
        chosen = [m for m in MODELS if m in models]
        if not chosen or len(chosen) != len(set(models)):
            raise JobRefused(f"choose one or more models of {', '.join(MODELS)}")
        backbone = form.get("backbone") or BACKBONES[0]
        if backbone not in BACKBONES:
            raise JobRefused(f"backbone must be one of {', '.join(BACKBONES)}")
        folds = _int(form, "cv_folds", 2, 10, 5)
        loso = form.get("loso") == "on"
        choices = {"dataset": dataset, "models": ",".join(chosen), "backbone": backbone, "cv_folds": folds}
        argv = [
            *hemascope, "train", "classifiers", *data, *(["--no-probe"] if data[0] == "--data" else []),
            "--out", "bundle", "--report", "report", "--models", ",".join(chosen),
            "--backbone", backbone, "--cv-folds", str(folds), "--loso" if loso else "--no-loso",
        ]  # fmt: skip
        return Plan(kind, choices | {"loso": loso}, argv)
    bundle = form.get("bundle") or ""
    bundle_path = catalogue.bundle_path(bundle, trained)
    if kind == "evaluate":
        data = catalogue.dataset_option(dataset, allow_spec=True)
        argv = [*hemascope, "evaluate", "--bundle", str(bundle_path), *data, "--json"]
        return Plan(kind, {"dataset": dataset, "bundle": bundle}, argv)
    data = catalogue.dataset_option(dataset, allow_spec=False)
    replicates = _int(form, "replicates", 100, 10000, 1000)
    argv = [
        *hemascope, "site", "validate", "--bundle", str(bundle_path), *data,
        "--out", "report", "--replicates", str(replicates),
    ]  # fmt: skip
    return Plan(kind, {"dataset": dataset, "bundle": bundle, "replicates": replicates}, argv)
