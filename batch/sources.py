"""Where the images come from: a folder, a glob, a Parquet dataset of image bytes or paths, any fsspec URL.

Listing happens on the driver (names only); the bytes are read in Ray tasks (:func:`read_bytes`), each
file hashed (SHA-256 of its bytes: the ``content_hash`` a rerun skips on). A file that cannot be read
becomes an error row, never an exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from batch.schema import ERROR, OK, SKIPPED, SOURCE
from hemascope.errors import InvalidArgument

#: Image files a folder or glob contributes (case-insensitive); anything else there is not an image.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
#: Column names tried, in order, for a Parquet input's bytes and paths.
BYTES_COLUMNS = ("image", "data", "bytes", "content")
PATH_COLUMNS = ("path", "source", "filename", "file")


@dataclass(frozen=True)
class Source:
    """A resolved input: a list of files, or a Parquet dataset with a bytes and/or a path column."""

    paths: tuple[str, ...] = ()
    parquet: str = ""
    #: (file, row group) of a Parquet input: each is read by one Ray task
    fragments: tuple[tuple[str, int], ...] = ()
    bytes_column: str = ""
    path_column: str = ""
    count: int = 0


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _protocol_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path fsspec can open again anywhere (the URL scheme kept for remote filesystems)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def resolve(spec: str, *, bytes_column: str | None = None, path_column: str | None = None) -> Source:
    """INPUT -> Source; InvalidArgument when it names nothing usable."""
    fs, path = url_to_fs(spec)
    if any(ch in path for ch in "*?["):
        found = sorted(p for p in fs.glob(path) if fs.isfile(p) and _is_image(p))
        return _files(fs, found, spec)
    if not fs.exists(path):
        raise InvalidArgument(f"{spec}: no such file or folder", reason="NO_INPUT", field="input")
    if path.endswith(".parquet") or (fs.isdir(path) and _parquet_only(fs, path)):
        return _parquet(fs, path, spec, bytes_column, path_column)
    if fs.isfile(path):
        return _files(fs, [path], spec)
    found = sorted(p for p in fs.find(path) if _is_image(p))
    return _files(fs, found, spec)


def _parquet_only(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    names = [p.rsplit("/", 1)[-1] for p in fs.find(path)]
    data = [n for n in names if not n.startswith(("_", "."))]
    return bool(data) and all(n.endswith(".parquet") for n in data)


def _files(fs: fsspec.AbstractFileSystem, found: list[str], spec: str) -> Source:
    if not found:
        raise InvalidArgument(
            f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) found", reason="NO_IMAGES", field="input"
        )
    paths = tuple(_protocol_path(fs, p) for p in found)
    return Source(paths=paths, count=len(paths))


def _parquet(
    fs: fsspec.AbstractFileSystem,
    path: str,
    spec: str,
    bytes_column: str | None,
    path_column: str | None,
) -> Source:
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    names = dataset.schema.names
    image = bytes_column or next((c for c in BYTES_COLUMNS if c in names), "")
    where = path_column or next((c for c in PATH_COLUMNS if c in names), "")
    for given in (bytes_column, path_column):
        if given and given not in names:
            raise InvalidArgument(
                f"{spec}: no column {given!r}; it has {names}", reason="NO_COLUMN", field="input"
            )
    if not image and not where:
        raise InvalidArgument(
            f"{spec}: a Parquet input needs a bytes column ({', '.join(BYTES_COLUMNS)}) or a path column "
            f"({', '.join(PATH_COLUMNS)}); it has {names}",
            reason="NO_COLUMN",
            field="input",
        )
    fragments = tuple(
        (_protocol_path(fs, fragment.path), group.id)
        for fragment in dataset.get_fragments()
        for group in fragment.row_groups
    )
    return Source(
        parquet=_protocol_path(fs, path),
        fragments=fragments,
        bytes_column=image,
        path_column=where,
        count=dataset.count_rows(),
    )


# --- in Ray tasks -----------------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with fsspec.open(path, "rb") as handle:
        data: bytes = handle.read()
    return data


def read_row_group(
    path: str, group: int, *, bytes_column: str, path_column: str, done: Iterable[str] | None, rows: int
) -> Iterator[pa.Table]:
    """One row group of a Parquet input, ``rows`` at a time, as :func:`read_bytes` rows."""
    columns = [c for c in (bytes_column, path_column) if c]
    with fsspec.open(path, "rb") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(
            batch_size=rows, row_groups=[group], columns=columns
        ):
            table = pa.Table.from_batches([batch])
            yield read_bytes(table, done=done, bytes_column=bytes_column, path_column=path_column)


def read_bytes(
    batch: pa.Table, *, done: Iterable[str] | None = None, bytes_column: str = "", path_column: str = ""
) -> pa.Table:
    """Rows of paths and/or bytes -> :data:`batch.schema.SOURCE` rows: bytes read and hashed; rows whose
    hash is in ``done`` marked skipped (no bytes kept); unreadable files marked as errors."""
    done_set = done if isinstance(done, (set, frozenset)) else set(done or ())
    n = batch.num_rows
    paths = batch.column(path_column or "path").to_pylist() if (path_column or not bytes_column) else None
    blobs = batch.column(bytes_column).to_pylist() if bytes_column else None
    rows: dict[str, list[Any]] = {name: [] for name in SOURCE.names}
    for i in range(n):
        path = str(paths[i]) if paths is not None and paths[i] is not None else ""
        data = blobs[i] if blobs is not None else None
        state, stage, reason, message = OK, None, None, None
        if data is None and paths is not None and paths[i] is not None:
            try:
                data = _read(path)
            except (OSError, ValueError) as exc:
                state, stage, reason, message = ERROR, "read", "UNREADABLE", f"{type(exc).__name__}: {exc}"
        elif data is None:
            state, stage, reason, message = ERROR, "read", "NO_BYTES", "the row has neither bytes nor a path"
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        if digest is not None and digest in done_set:
            state, data = SKIPPED, None
        for name, value in zip(
            SOURCE.names, (path, data, digest, state, stage, reason, message), strict=True
        ):
            rows[name].append(value)
    return pa.table(rows, schema=SOURCE)
