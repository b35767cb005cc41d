"""The batch pipeline's pieces without Ray: sizing, inputs, byte reading, result layout, parts, summary."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.output import PartWriter, ResultStore
from batch.plan import plan
from batch.schema import ERROR, OK, SKIPPED, SOURCE, Layout, split
from batch.sources import read_bytes, read_row_group, resolve
from batch.summary import Summary
from hemascope.errors import FailedPrecondition, InvalidArgument

LAYOUT = Layout(
    classify=True,
    models=("lr", "svm"),
    classes=("a", "b"),
    provenance=(("bundle_version", "v1"), ("backbone", "bb")),
)


# --- sizing -----------------------------------------------------------------------------------------------


def test_cpu_plan_one_actor_per_core_leaving_room_for_the_readers() -> None:
    pool = plan(2, 0)
    assert (pool.actors, pool.threads, pool.batch_size, pool.use_gpu) == (2, 1, 32, False)
    assert pool.actors * pool.actor_cpus + 0.1 <= 2
    assert plan(16, 0).actors == 16
    assert plan(1, 0).actors == 1 and plan(1, 0).actor_cpus <= 0.9


def test_gpu_plan_one_actor_per_gpu_unless_told_otherwise() -> None:
    pool = plan(16, 2)
    assert (pool.actors, pool.actor_gpus, pool.batch_size, pool.use_gpu) == (2, 1.0, 128, True)
    assert pool.threads == 7
    assert not plan(16, 2, use_gpu=False).use_gpu
    assert plan(16, 2, use_gpu=False).actors == 16
    assert plan(2, 0, actors=5, batch_size=8).actors == 5 and plan(2, 0, batch_size=8).batch_size == 8


# --- inputs -----------------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.JPG").write_bytes(b"jpeg-ish")
    (tmp_path / "two.png").write_bytes(b"png-ish")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    return tmp_path


def test_folder_lists_image_files_recursively_and_nothing_else(folder: Path) -> None:
    source = resolve(str(folder))
    assert source.paths == (str(folder / "a" / "one.JPG"), str(folder / "two.png"))
    assert source.count == 2 and not source.parquet


def test_glob_and_single_file(folder: Path) -> None:
    assert resolve(str(folder / "*.png")).paths == (str(folder / "two.png"),)
    assert resolve(str(folder / "two.png")).paths == (str(folder / "two.png"),)


def test_inputs_that_name_nothing_are_refused(folder: Path) -> None:
    with pytest.raises(InvalidArgument) as missing:
        resolve(str(folder / "nope"))
    assert missing.value.reason == "NO_INPUT"
    with pytest.raises(InvalidArgument) as empty:
        resolve(str(folder / "*.tif"))
    assert empty.value.reason == "NO_IMAGES"


def test_parquet_input_finds_its_bytes_and_path_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": [b"x", b"y"], "path": ["p1", "p2"]}), tmp_path / "in.parquet")
    source = resolve(str(tmp_path / "in.parquet"))
    assert (source.bytes_column, source.path_column, source.count) == ("image", "path", 2)
    assert source.fragments == ((str(tmp_path / "in.parquet"), 0),)
    folder = tmp_path / "set"
    folder.mkdir()
    pq.write_table(pa.table({"source": ["p1"]}), folder / "part-0.parquet")
    assert resolve(str(folder)).path_column == "source"
    pq.write_table(pa.table({"other": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(InvalidArgument) as bad:
        resolve(str(tmp_path / "bad.parquet"))
    assert bad.value.reason == "NO_COLUMN"
    with pytest.raises(InvalidArgument):
        resolve(str(tmp_path / "in.parquet"), bytes_column="pixels")


def test_read_bytes_hashes_skips_done_and_reports_unreadable(folder: Path) -> None:
    one, two = folder / "a" / "one.JPG", folder / "two.png"
    done = {hashlib.sha256(b"png-ish").hexdigest()}
    batch = pa.table({"path": [str(one), str(two), str(folder / "gone.png")]})
    rows = read_bytes(batch, done=done).to_pylist()
    assert [r["status"] for r in rows] == [OK, SKIPPED, ERROR]
    assert (
        rows[0]["data"] == b"jpeg-ish" and rows[0]["content_hash"] == hashlib.sha256(b"jpeg-ish").hexdigest()
    )
    assert rows[1]["data"] is None
    assert (rows[2]["error_stage"], rows[2]["error_reason"]) == ("read", "UNREADABLE")
    assert "FileNotFoundError" in rows[2]["error_message"]


def test_parquet_row_groups_are_read_in_slices(tmp_path: Path) -> None:
    table = pa.table({"image": [b"a", b"b", b"c", b"d", b"e"], "name": ["1", "2", "3", "4", "5"]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)
    source = resolve(str(tmp_path / "in.parquet"), path_column="name")
    assert [g for _, g in source.fragments] == [0, 1]
    done = {hashlib.sha256(b"b").hexdigest()}
    slices = list(
        read_row_group(*source.fragments[0], bytes_column="image", path_column="name", done=done, rows=2)
    )
    assert [t.num_rows for t in slices] == [2, 1]
    rows = [r for t in slices for r in t.to_pylist()]
    assert [(r["path"], r["status"]) for r in rows] == [("1", OK), ("2", SKIPPED), ("3", OK)]


def test_read_bytes_from_a_bytes_column_without_paths() -> None:
    batch = pa.table({"image": pa.array([b"abc", None], pa.binary())})
    rows = read_bytes(batch, bytes_column="image").to_pylist()
    assert rows[0]["status"] == OK and rows[0]["path"] == ""
    assert (rows[1]["status"], rows[1]["error_reason"]) == (ERROR, "NO_BYTES")


# --- layout, split, parts, summary -------------------------------------------------------------------------


def test_layout_columns_follow_the_bundle_and_the_flags() -> None:
    names = LAYOUT.results().names
    assert names[:2] == ["path", "content_hash"]
    assert {"lr_label", "lr_probabilities", "svm_refer_reason", "label", "refer", "malignant"} <= set(names)
    assert "embedding" not in names and "detections" not in names
    assert names[-3:] == ["bundle_version", "backbone", "run_id"]
    wider = Layout(classify=True, models=("lr",), classes=("a",), embedding=True, detect=True)
    assert {"embedding", "detections"} <= set(wider.results().names)
    embed_only = Layout(classify=False, embedding=True).results().names
    assert "label" not in embed_only and "embedding" in embed_only


def _worker_rows(states: list[str]) -> pa.Table:
    schema = LAYOUT.worker_output()
    rows = []
    for i, state in enumerate(states):
        row: dict[str, object] = dict.fromkeys(schema.names)
        row |= {"path": f"p{i}", "content_hash": f"h{i}", "status": state, "run_id": "r"}
        if state == ERROR:
            row |= {"error_stage": "decode", "error_reason": "BAD", "error_message": "bad"}
        if state == OK:
            row |= {"label": "a", "malignant": i == 0, "refer": True}
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema)


def test_split_sends_each_row_to_its_table() -> None:
    results, errors, skipped = split(_worker_rows([OK, ERROR, SKIPPED, OK]), LAYOUT, "r")
    assert results.column("path").to_pylist() == ["p0", "p3"]
    assert results.schema.names == LAYOUT.results().names
    assert errors.to_pylist() == [
        {
            "path": "p1",
            "content_hash": "h1",
            "stage": "decode",
            "reason": "BAD",
            "message": "bad",
            "run_id": "r",
        }
    ]
    assert skipped == 1
    summary = Summary(run_id="r", out="o")
    summary.add(results, errors, skipped)
    assert (summary.images, summary.analysed, summary.errors, summary.skipped) == (4, 2, 1, 1)
    assert (summary.malignant, summary.referred, summary.per_class["a"]) == (1, 2, 2)
    assert summary.as_dict()["error_reasons"] == {"BAD": 1}


def test_parts_roll_over_and_appear_only_when_complete(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "out"))
    results, _ = store.writers(LAYOUT, "r1", rows_per_part=2)
    table, _, _ = split(_worker_rows([OK, OK, OK]), LAYOUT, "r1")
    results.write(table.slice(0, 1))
    assert store.done_hashes() == set()  # the open part is hidden
    results.write(table.slice(1, 1))  # reaches rows_per_part: the part is closed
    results.write(table.slice(2, 1))
    results.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "part-r1-00000.parquet",
        "part-r1-00001.parquet",
    ]
    assert store.done_hashes() == {"h0", "h1", "h2"}
    store.check_compatible(LAYOUT)
    with pytest.raises(FailedPrecondition) as other:
        store.check_compatible(Layout(classify=False, embedding=True, provenance=(("backbone", "bb"),)))
    assert other.value.reason == "OUT_MISMATCH"


def test_source_schema_is_what_the_workers_read() -> None:
    assert SOURCE.names[:3] == ["path", "data", "content_hash"]


def test_part_writer_ignores_empty_tables(tmp_path: Path) -> None:
    import fsspec

    writer = PartWriter(fsspec.filesystem("file"), str(tmp_path), LAYOUT.results(), "r", 10)
    writer.write(LAYOUT.results().empty_table())
    writer.close()
    assert list(tmp_path.iterdir()) == [] and writer.parts == 0
