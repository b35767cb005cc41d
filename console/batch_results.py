"""Reading the results of ``hemascope batch analyze`` from folders under an allow-listed root.

A result folder (docs/batch.md) holds ``part-<run>-<n>.parquet`` (one row per analysed image),
``_errors/part-*.parquet`` (the images that could not be analysed) and ``_runs/<run>.json`` (each run's
summary). Only folders that lie inside the root once resolved (symlinks followed) are ever opened, and so
are the files in them: a link that leads out of the root is refused, not read.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

PART_GLOB = "part-*.parquet"
ERRORS_DIR = "_errors"
RUNS_DIR = "_runs"
#: The columns the page shows (present in every classified result).
COLUMNS = (
    "path", "content_hash", "label", "probability", "malignant", "refer", "refer_reason",
    "malignant_unconfirmed",
)  # fmt: skip
ERROR_COLUMNS = ("path", "content_hash", "stage", "reason", "message", "run_id")
FLAGS = ("", "malignant", "not_malignant", "unconfirmed")
REFERRALS = ("", "referred", "not_referred")


MISSING_READER = (
    "Reading batch results needs pyarrow, which this installation lacks: install the console with the "
    "console extra (pip install 'hemascope[console]')."
)


def reader_missing() -> str:
    """Why batch results cannot be read here (pyarrow is not installed), or an empty string."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return MISSING_READER
    return ""


class NotABatchResult(Exception):
    """The name is outside the root, is no folder, or the folder holds no batch result."""


def resolve_result(root: Path, name: str) -> Path:
    """The result folder ``root/name`` resolved; NotABatchResult unless it is a direct child folder of
    ``root`` (after following symlinks) that holds a batch result."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise NotABatchResult(f"{name!r} is not a result folder name")
    base = root.resolve()
    folder = (base / name).resolve()
    if folder.parent != base or not folder.is_dir():
        raise NotABatchResult(f"{name!r} is not a folder inside the batch results root")
    if not _parts(base, folder) and not (folder / RUNS_DIR).is_dir():
        raise NotABatchResult(f"{name!r} holds no batch result")
    return folder


def _parts(base: Path, folder: Path) -> list[Path]:
    """The complete part files of ``folder`` that resolve inside ``base`` (a link out is skipped)."""
    if not folder.is_dir():
        return []
    parts = []
    for part in sorted(folder.glob(PART_GLOB)):
        target = part.resolve()
        if target.is_file() and target.is_relative_to(base):
            parts.append(target)
    return parts


@dataclass(frozen=True)
class ResultFolder:
    """One result folder in the listing."""

    name: str
    results: int
    errors: int
    runs: int


def list_results(root: Path) -> list[ResultFolder]:
    """The result folders directly under ``root`` (hidden and ``_`` names skipped), by name."""
    import pyarrow.parquet as pq

    base = root.resolve()
    if not base.is_dir():
        return []
    found = []
    for child in sorted(base.iterdir(), key=lambda p: p.name):
        if child.name.startswith((".", "_")):
            continue
        try:
            folder = resolve_result(base, child.name)
        except NotABatchResult:
            continue
        results = sum(pq.read_metadata(p).num_rows for p in _parts(base, folder))
        errors = sum(pq.read_metadata(p).num_rows for p in _parts(base, folder / ERRORS_DIR))
        runs = len(_runs(base, folder))
        found.append(ResultFolder(child.name, results, errors, runs))
    return found


def _runs(base: Path, folder: Path) -> list[dict[str, Any]]:
    runs_dir = folder / RUNS_DIR
    if not runs_dir.is_dir():
        return []
    runs = []
    for path in sorted(runs_dir.glob("*.json")):
        target = path.resolve()
        if not target.is_relative_to(base):
            continue
        try:
            runs.append(json.loads(target.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return runs


@dataclass(frozen=True)
class Filters:
    """What the table is narrowed to; unknown values are ignored (the whole result)."""

    label: str = ""
    flag: str = ""
    referral: str = ""
    min_confidence: int = 0
    """Percent, 0-100."""

    @classmethod
    def from_query(cls, query: dict[str, str], classes: list[str]) -> Filters:
        label = query.get("label", "")
        flag = query.get("flag", "")
        referral = query.get("referral", "")
        try:
            confidence = max(0, min(100, int(query.get("min_confidence", "0") or 0)))
        except ValueError:
            confidence = 0
        return cls(
            label if label in classes else "",
            flag if flag in FLAGS else "",
            referral if referral in REFERRALS else "",
            confidence,
        )

    def as_query(self) -> dict[str, str]:
        values = {
            "label": self.label,
            "flag": self.flag,
            "referral": self.referral,
            "min_confidence": str(self.min_confidence) if self.min_confidence else "",
        }
        return {k: v for k, v in values.items() if v}


@dataclass
class BatchResult:
    """A result folder read: its rows (the shown columns), its errors and its runs' summaries."""

    name: str
    classified: bool
    table: pa.Table
    errors: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    classes: list[str] = field(default_factory=list)

    @property
    def analysed(self) -> int:
        return int(self.table.num_rows)

    def per_class(self) -> dict[str, int]:
        if not self.classified:
            return {}
        import pyarrow.compute as pc

        counted = pc.value_counts(self.table.column("label")).to_pylist()
        counts = {str(c["values"]): int(c["counts"]) for c in counted}
        return {name: counts.get(name, 0) for name in self.classes} | counts

    def count(self, column: str) -> int:
        import pyarrow.compute as pc

        if column not in self.table.column_names:
            return 0
        return int(pc.sum(self.table.column(column)).as_py() or 0)

    def error_reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(str(e["reason"]) for e in self.errors).items()))

    def rows(self, filters: Filters) -> pa.Table:
        """The rows the filters keep, in path order."""
        import pyarrow.compute as pc

        table = self.table
        if not self.classified:
            return table
        mask = pc.is_valid(table.column("path"))
        if filters.label:
            mask = pc.and_(mask, pc.equal(table.column("label"), filters.label))
        if filters.flag == "malignant":
            mask = pc.and_(mask, table.column("malignant"))
        elif filters.flag == "not_malignant":
            mask = pc.and_(mask, pc.invert(table.column("malignant")))
        elif filters.flag == "unconfirmed" and "malignant_unconfirmed" in table.column_names:
            mask = pc.and_(mask, table.column("malignant_unconfirmed"))
        if filters.referral == "referred":
            mask = pc.and_(mask, table.column("refer"))
        elif filters.referral == "not_referred":
            mask = pc.and_(mask, pc.invert(table.column("refer")))
        if filters.min_confidence:
            mask = pc.and_(mask, pc.greater_equal(table.column("probability"), filters.min_confidence / 100))
        return table.filter(pc.fill_null(mask, False))


#: Results kept read (a large one takes seconds to read; paging and filtering it again should not).
CACHED = 4
_cache: OrderedDict[tuple[Any, ...], BatchResult] = OrderedDict()
_cache_lock = threading.Lock()


def _signature(base: Path, folder: Path) -> tuple[Any, ...]:
    """What a result's reading depends on: every part, error part and run summary, with its size and time
    (a rerun that adds parts, or a folder replaced, reads afresh)."""
    files = [
        *_parts(base, folder),
        *_parts(base, folder / ERRORS_DIR),
        *sorted((folder / RUNS_DIR).glob("*.json")),
    ]
    stats = []
    for path in files:
        stat = path.stat()
        stats.append((str(path), stat.st_size, stat.st_mtime_ns))
    return (str(folder), *stats)


def read_result(root: Path, name: str) -> BatchResult:
    """The result folder ``name`` under ``root`` (kept for the next call while its files are unchanged);
    NotABatchResult when it is not one."""
    base = root.resolve()
    folder = resolve_result(base, name)
    key = _signature(base, folder)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    result = _read(base, folder, name)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > CACHED:
            _cache.popitem(last=False)
    return result


def _read(base: Path, folder: Path, name: str) -> BatchResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = _parts(base, folder)
    classes: list[str] = []
    classified = False
    tables = []
    for part in parts:
        schema = pq.read_schema(part)
        classified = "label" in schema.names
        if not classes:
            classes = list(json.loads((schema.metadata or {}).get(b"hemascope.classes", b"[]")))
        columns = [c for c in COLUMNS if c in schema.names]
        tables.append(pq.read_table(part, columns=columns))
    table = (
        pa.concat_tables(tables, promote_options="default").sort_by("path")
        if tables
        else pa.table({"path": pa.array([], pa.string())})
    )
    classified = classified and "label" in table.column_names
    # A rerun retries the errors: an image analysed since, or failed again, is counted once (its latest).
    done = set(table.column("content_hash").to_pylist()) if "content_hash" in table.column_names else set()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for part in _parts(base, folder / ERRORS_DIR):
        schema = pq.read_schema(part)
        columns = [c for c in ERROR_COLUMNS if c in schema.names]
        for error in pq.read_table(part, columns=columns).to_pylist():
            if error.get("content_hash") not in done:
                latest[(str(error.get("path") or ""), str(error.get("content_hash") or ""))] = error
    errors = sorted(latest.values(), key=lambda e: str(e.get("path") or ""))
    return BatchResult(name, classified, table, errors, _runs(base, folder), classes)
