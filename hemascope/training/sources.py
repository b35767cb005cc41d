"""Several datasets, each from one or more laboratories (sites), as one labelled image list.

A training or evaluation run takes dataset roots (folder-per-class, as :func:`hemascope.datasets.scan_dataset`
reads them) described by a small YAML spec or by repeated ``--data NAME=PATH`` options. Per dataset:

- ``site``: the laboratory every image comes from, or ``sites``: a map from file-name prefix to laboratory
  for a dataset assembled from several (``bloodcells-5class``: ``BA_``/``ERB_``/``MO_`` Barcelona,
  ``MYO_``/``NGS_`` Munich). A file that matches no prefix is an error, never silently assigned;
- ``groups``: the unit that must never be split, ``patient`` (read from the dataset's ``manifest.csv``,
  columns ``file`` and ``patient``) or ``duplicates`` (byte-identical and near-duplicate images only: the
  dataset names no patients). Duplicates are merged on top of patients in every case;
- ``role``: ``train`` (the default) or ``evaluation`` (scored, never fitted on: the Barcelona neutrophil
  probe).

Example (``configs/data/three-labs.yaml``)::

    datasets:
      - name: bloodcells-5class
        root: bloodcells-5class          # relative to the spec file's data_dir (or the shared data)
        groups: duplicates
        sites: {BA_: barcelona, ERB_: barcelona, MO_: barcelona, MYO_: munich, NGS_: munich}
      - name: jhu-cellavision
        root: jhu-cellavision
        groups: patient
        site: johns-hopkins
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hemascope.data import shared_data_dir
from hemascope.datasets import CLASSES, scan_dataset
from hemascope.errors import InvalidArgument

GroupKind = Literal["patient", "duplicates"]
Role = Literal["train", "evaluation"]
MANIFEST = "manifest.csv"


class SourceSpecError(InvalidArgument):
    """A dataset spec or ``--data`` option is malformed, or a dataset does not match it."""

    default_reason = "BAD_DATASET_SPEC"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset root and how to read its sites, groups and role."""

    name: str
    root: Path
    site: str | None = None
    sites: Mapping[str, str] = field(default_factory=dict)
    groups: GroupKind = "duplicates"
    role: Role = "train"

    def site_of(self, path: Path) -> str:
        if self.site is not None:
            return self.site
        for prefix, site in sorted(self.sites.items(), key=lambda kv: -len(kv[0])):
            if path.name.startswith(prefix):
                return site
        raise SourceSpecError(
            f"{path.name} in dataset {self.name!r} matches none of its site prefixes {sorted(self.sites)}"
        )


@dataclass(frozen=True)
class SourcedRecord:
    """One image with its label, dataset, site (laboratory) and grouping key."""

    path: Path
    label: str
    dataset: str
    site: str
    #: ``"<dataset>/<patient>"`` when the dataset names patients, else ``""`` (duplicates only)
    patient: str
    role: Role
    split: str = ""


@dataclass
class SourcedSet:
    """Every image of every dataset of a spec, in dataset then scan order."""

    specs: list[DatasetSpec]
    records: list[SourcedRecord]
    unknown_folders: list[Path] = field(default_factory=list)

    def where(self, role: Role) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.role == role]

    @property
    def sites(self) -> list[str]:
        """Every site, in first-seen order."""
        return list(dict.fromkeys(r.site for r in self.records))

    def training_sites(self) -> list[str]:
        return list(dict.fromkeys(r.site for r in self.records if r.role == "train"))

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per ``"<dataset>:<site>"`` and class."""
        out: dict[str, dict[str, int]] = {}
        for (key, label), n in sorted(
            Counter((f"{r.dataset}:{r.site}", r.label) for r in self.records).items()
        ):
            out.setdefault(key, {})[label] = n
        return out

    def describe(self) -> list[dict[str, Any]]:
        """The spec as JSON-able dicts (for reports and bundle manifests)."""
        return [
            {
                "name": s.name,
                "root": str(s.root),
                "site": s.site,
                "sites": dict(s.sites),
                "groups": s.groups,
                "role": s.role,
                "images": sum(1 for r in self.records if r.dataset == s.name),
                "patients": len({r.patient for r in self.records if r.dataset == s.name and r.patient}),
            }
            for s in self.specs
        ]


def _str(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise SourceSpecError(f"{where}: '{key}' must be a non-empty string")
    return value


def _dataset(entry: Any, index: int, data_dir: Path) -> DatasetSpec:
    where = f"datasets[{index}]"
    if not isinstance(entry, Mapping):
        raise SourceSpecError(f"{where} must be a mapping")
    unknown = set(entry) - {"name", "root", "site", "sites", "groups", "role"}
    if unknown:
        raise SourceSpecError(f"{where}: unknown keys {sorted(unknown)}")
    name = _str(entry, "name", where)
    root = Path(_str(entry, "root", where))
    site, sites = entry.get("site"), entry.get("sites") or {}
    if (site is None) == (not sites):
        raise SourceSpecError(f"{where} ({name}): give exactly one of 'site' or 'sites'")
    if site is not None and not isinstance(site, str):
        raise SourceSpecError(f"{where} ({name}): 'site' must be a string")
    if not isinstance(sites, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sites.items()
    ):
        raise SourceSpecError(f"{where} ({name}): 'sites' must map file-name prefixes to site names")
    groups = entry.get("groups", "duplicates")
    if groups not in ("patient", "duplicates"):
        raise SourceSpecError(f"{where} ({name}): 'groups' must be 'patient' or 'duplicates'")
    role = entry.get("role", "train")
    if role not in ("train", "evaluation"):
        raise SourceSpecError(f"{where} ({name}): 'role' must be 'train' or 'evaluation'")
    return DatasetSpec(
        name=name,
        root=root if root.is_absolute() else data_dir / root,
        site=site,
        sites=dict(sites),
        groups=groups,
        role=role,
    )


def parse_spec(document: Any, data_dir: Path) -> list[DatasetSpec]:
    """Dataset specs from a parsed YAML document (see the module docstring)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("datasets"), list):
        raise SourceSpecError("a dataset spec is a mapping with a 'datasets' list")
    specs = [_dataset(entry, i, data_dir) for i, entry in enumerate(document["datasets"])]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SourceSpecError(f"dataset names must be unique: {names}")
    if not any(s.role == "train" for s in specs):
        raise SourceSpecError("a dataset spec needs at least one dataset with role 'train'")
    return specs


def load_spec(path: Path, data_dir: Path | None = None) -> list[DatasetSpec]:
    """Reads a YAML dataset spec; relative roots are under ``data_dir`` (default: its ``data_dir`` key,
    relative to the file, else the shared data folder)."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SourceSpecError(f"cannot read dataset spec {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SourceSpecError(f"dataset spec {path} is not valid YAML: {exc}") from None
    if data_dir is None:
        configured = document.get("data_dir") if isinstance(document, Mapping) else None
        data_dir = (path.parent / configured) if isinstance(configured, str) else shared_data_dir()
    return parse_spec(document, data_dir)


def _manifest_patients(root: Path) -> dict[str, str] | None:
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "patient"} <= set(reader.fieldnames):
            raise SourceSpecError(f"{manifest} needs the columns 'file' and 'patient'")
        return {row["file"]: row["patient"] for row in reader}


def spec_from_option(option: str, *, role: Role = "train") -> DatasetSpec:
    """``NAME=PATH`` (or a bare ``PATH``, named after its folder): one site named NAME; groups by patient
    when the root has a ``manifest.csv`` with a patient column, else by duplicates."""
    name, sep, path = option.partition("=")
    root = Path(path if sep else option)
    if not sep:
        name = root.name
    if not name or not str(root):
        raise SourceSpecError(f"--data {option!r}: expected NAME=PATH or PATH")
    groups: GroupKind = "patient" if (root / MANIFEST).is_file() else "duplicates"
    return DatasetSpec(name=name, root=root, site=name, groups=groups, role=role)


def scan_sources(specs: Sequence[DatasetSpec], classes: tuple[str, ...] = CLASSES) -> SourcedSet:
    """Lists every image of every dataset with its site and patient; checks the spec against the files."""
    records: list[SourcedRecord] = []
    unknown: list[Path] = []
    for spec in specs:
        if not spec.root.is_dir():
            raise SourceSpecError(f"dataset {spec.name!r}: folder not found: {spec.root}")
        scan = scan_dataset(spec.root, classes=classes)
        if not scan.records:
            raise SourceSpecError(
                f"dataset {spec.name!r} ({spec.root}) holds no images of the classes: give a folder with one "
                f"subfolder per class ({', '.join(classes)}), each holding images (train/, val/ and test/ "
                "levels are allowed)"
            )
        unknown += scan.unknown_folders
        patients = _manifest_patients(spec.root) if spec.groups == "patient" else None
        if spec.groups == "patient" and patients is None:
            raise SourceSpecError(f"dataset {spec.name!r} groups by patient but has no {MANIFEST}")
        for record in scan.records:
            patient = ""
            if patients is not None:
                relative = record.path.relative_to(spec.root).as_posix()
                if relative not in patients:
                    raise SourceSpecError(f"{relative} of dataset {spec.name!r} is not in its {MANIFEST}")
                patient = f"{spec.name}/{patients[relative]}"
            records.append(
                SourcedRecord(
                    record.path,
                    record.label,
                    spec.name,
                    spec.site_of(record.path),
                    patient,
                    spec.role,
                    record.split,
                )
            )
    return SourcedSet(list(specs), records, unknown)


def site_labels(records: Iterable[SourcedRecord]) -> list[str]:
    return [r.site for r in records]
