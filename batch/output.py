"""The result dataset: Parquet parts streamed from the driver, an errors table beside them, resumable.

Layout of OUT (any fsspec URL): ``part-<run>-<n>.parquet`` files (the results; a reader of the folder sees
only them), ``_errors/part-<run>-<n>.parquet`` (the errors table) and ``_runs/<run>.json`` (each run's
summary). A part is written under a hidden name and renamed when complete, so an interrupted run leaves
only whole parts behind, and a rerun skips exactly the images they hold.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from batch.schema import ERRORS, META_PROVENANCE, Layout
from hemascope.errors import FailedPrecondition

ERRORS_DIR = "_errors"
RUNS_DIR = "_runs"


class PartWriter:
    """Streams tables into Parquet parts of at most ``rows_per_part`` rows (one row group per table)."""

    def __init__(
        self, fs: fsspec.AbstractFileSystem, folder: str, schema: pa.Schema, run_id: str, rows_per_part: int
    ) -> None:
        self.fs, self.folder, self.schema, self.run_id = fs, folder, schema, run_id
        self.rows_per_part = rows_per_part
        self.parts = 0
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._handle: Any = None
        self._name = ""
        self._in_part = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_table(table.cast(self.schema))
        self._in_part += table.num_rows
        self.rows += table.num_rows
        if self._in_part >= self.rows_per_part:
            self.close()

    def _open(self) -> None:
        self.fs.makedirs(self.folder, exist_ok=True)
        self._name = f"part-{self.run_id}-{self.parts:05d}.parquet"
        self._handle = self.fs.open(f"{self.folder}/.{self._name}.inprogress", "wb")
        self._writer = pq.ParquetWriter(self._handle, self.schema, compression="zstd")
        self._in_part = 0

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._handle.close()
        self.fs.mv(f"{self.folder}/.{self._name}.inprogress", f"{self.folder}/{self._name}")
        self._writer = None
        self.parts += 1


class ResultStore:
    """OUT: what is already there (hashes, provenance) and the writers of this run."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.fs, self.root = url_to_fs(out)

    def _parts(self, folder: str) -> list[str]:
        if not self.fs.isdir(folder):
            return []
        return sorted(
            p
            for p in self.fs.ls(folder, detail=False)
            if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")
        )

    def done_hashes(self) -> set[str]:
        """Content hashes of the images already in the results."""
        parts = self._parts(self.root)
        if not parts:
            return set()
        table = pads.dataset(parts, filesystem=self.fs, format="parquet").to_table(columns=["content_hash"])
        return set(table.column("content_hash").to_pylist())

    def check_compatible(self, layout: Layout) -> None:
        """A rerun must add rows of the same kind: same columns and the same provenance."""
        parts = self._parts(self.root)
        if not parts:
            return
        with self.fs.open(parts[0], "rb") as handle:
            existing = pq.read_schema(handle)
        expected = layout.results()
        old = json.loads((existing.metadata or {}).get(META_PROVENANCE, b"{}"))
        new = json.loads(expected.metadata[META_PROVENANCE])
        if existing.names != expected.names or old != new:
            raise FailedPrecondition(
                f"{self.out} holds results of another kind (provenance {old or 'unknown'}, "
                f"{len(existing.names)} columns); this run makes provenance {new} with {len(expected.names)} "
                "columns. Write to another OUT, or remove the old one.",
                reason="OUT_MISMATCH",
                field="out",
            )

    def writers(self, layout: Layout, run_id: str, rows_per_part: int) -> tuple[PartWriter, PartWriter]:
        return (
            PartWriter(self.fs, self.root, layout.results(), run_id, rows_per_part),
            PartWriter(self.fs, f"{self.root}/{ERRORS_DIR}", ERRORS, run_id, rows_per_part),
        )

    def write_summary(self, run_id: str, summary: dict[str, Any]) -> str:
        folder = f"{self.root}/{RUNS_DIR}"
        self.fs.makedirs(folder, exist_ok=True)
        path = f"{folder}/{run_id}.json"
        with self.fs.open(path, "w") as handle:
            handle.write(json.dumps(summary, indent=2, sort_keys=True))
        return path
