"""The audit trail: chained appends, tamper detection at the right line, resume, concurrency, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.audit import (
    GENESIS_HASH,
    AuditLog,
    AuditRecord,
    entry_hash,
    options_from_message,
    sanitize_options,
    verify,
)
from hemascope.cli import main
from hemascope.errors import ConfigurationError, InvalidArgument, Unavailable
from hemascope.v1 import analysis_pb2

KEY = b"k" * 32


def record(n: int, caller: str = "lis-north") -> AuditRecord:
    return AuditRecord(
        caller_id=caller,
        content_hash=hashlib.sha256(f"pixels-{n}".encode()).hexdigest(),
        options={"detect": n % 2 == 0, "models": ["svm"]},
        model_versions={"classifier": "v1", "feature": "efficientnet_lite0:abcd"},
        outcome="OK",
        parts={"embedding": "OK", "classification": "OK"},
        latency_ms=12.5 + n,
        rpc="/hemascope.v1.AnalysisService/Analyze",
    )


def write_log(path: Path, count: int, key: bytes | None = None) -> list[str]:
    with AuditLog(path, key=key) as log:
        return [log.append(record(n)) for n in range(count)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_append_writes_chained_canonical_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    hashes = write_log(path, 3)
    entries = [json.loads(line) for line in lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev_hash"] == GENESIS_HASH
    assert [e["prev_hash"] for e in entries[1:]] == hashes[:2]
    assert [e["hash"] for e in entries] == hashes
    for entry in entries:
        assert entry["hash"] == entry_hash(entry)
        assert entry["time"].endswith("+00:00")
        assert entry["caller_id"] == "lis-north"
        assert entry["rpc"].endswith("/Analyze")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    result = verify(path)
    assert result.ok, result.message
    assert (result.records, result.first_bad_line, result.head_hash) == (3, None, hashes[-1])


def test_empty_and_new_logs_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).close()
    result = verify(path)
    assert result.ok
    assert (result.records, result.head_hash) == (0, "")


def edit(text: list[str]) -> list[str]:
    entry = json.loads(text[2])
    entry["outcome"] = "INVALID_ARGUMENT"
    text[2] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    return text


def delete(text: list[str]) -> list[str]:
    return text[:2] + text[3:]


def reorder(text: list[str]) -> list[str]:
    return [*text[:2], text[3], text[2], *text[4:]]


def insert_copy(text: list[str]) -> list[str]:
    return [*text[:2], text[0], *text[2:]]


def delete_first(text: list[str]) -> list[str]:
    return text[1:]


def truncate_tail(text: list[str]) -> list[str]:
    return [*text[:-1], text[-1][:-20]]


@pytest.mark.parametrize(
    ("tamper", "bad_line", "words"),
    [
        (edit, 3, "edited"),
        (delete, 3, "does not follow line 2"),
        (reorder, 3, "does not follow line 2"),
        (insert_copy, 3, "does not follow line 2"),
        (delete_first, 1, "not the start of a chain"),
        (truncate_tail, 5, "incomplete"),
    ],
)
def test_tampering_is_found_at_the_right_line(tmp_path: Path, tamper: Any, bad_line: int, words: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    path.write_text("".join(tamper(lines(path))))
    result = verify(path)
    assert not result.ok
    assert result.first_bad_line == bad_line
    assert words in result.message
    assert result.records == bad_line - 1


def test_a_forged_line_with_a_recomputed_hash_is_exposed_by_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    text = lines(path)
    forged = json.loads(text[1])  # a fake record after line 1, correctly linked and hashed
    forged |= {"seq": 2, "prev_hash": json.loads(text[0])["hash"], "caller_id": "intruder"}
    forged["hash"] = entry_hash(forged)
    path.write_text("".join([text[0], json.dumps(forged) + "\n", *text[1:]]))
    result = verify(path)
    assert (result.ok, result.first_bad_line) == (False, 3)


def test_hmac_key_stops_forged_lines_at_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3, key=KEY)
    assert verify(path, key=KEY).ok
    assert not verify(path).ok  # without the key the log cannot be verified
    assert not verify(path, key=b"x" * 32).ok
    text = lines(path)
    forged = json.loads(text[2]) | {"outcome": "OK", "caller_id": "intruder"}
    forged["hash"] = entry_hash(forged)  # the attacker has no key: a plain SHA-256
    path.write_text("".join([*text[:2], json.dumps(forged) + "\n"]))
    result = verify(path, key=KEY)
    assert (result.ok, result.first_bad_line) == (False, 3)


def test_anchors_catch_lines_cut_off_the_end(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    hashes = write_log(path, 4)
    assert verify(path, anchors=[hashes[3], hashes[1]]).ok
    path.write_text("".join(lines(path)[:3]))
    assert verify(path).ok  # a plain chain cannot see a cut tail ...
    result = verify(path, anchors=[hashes[3]])
    assert not result.ok  # ... an anchor kept elsewhere can
    assert hashes[3] in result.message


def test_resume_continues_the_chain_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 2)
    with AuditLog(path) as log:
        assert log.head == (2, first[-1])
        log.append(record(7))
    result = verify(path)
    assert result.ok, result.message
    assert result.records == 3


@pytest.mark.parametrize("damage", ["truncate", "edit", "blank"])
def test_refuses_to_start_on_a_damaged_tail(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    text = lines(path)
    if damage == "truncate":
        text[-1] = text[-1][:-10]
    elif damage == "edit":
        text[-1] = text[-1].replace('"OK"', '"NOT_FOUND"', 1)
    else:
        text.append("\n")
    path.write_text("".join(text))
    with pytest.raises(ConfigurationError, match="audit verify"):
        AuditLog(path)


def test_one_writer_per_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(ConfigurationError, match="another writer"):
        AuditLog(path)
    AuditLog(path).close()  # free again once closed


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    with pytest.raises(Unavailable):
        log.append(record(0))


def test_concurrent_appends_keep_the_chain_valid(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads, per_thread = 8, 25
    with AuditLog(path, fsync=False) as log:
        start = threading.Barrier(threads)

        def work(worker: int) -> None:
            start.wait()
            for n in range(per_thread):
                log.append(record(worker * 1000 + n, caller=f"lab-{worker}"))

        pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    result = verify(path)
    assert result.ok, result.message
    assert result.records == threads * per_thread


def test_records_carry_no_image_bytes_or_image_ids(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    rec = record(0)
    rec.options = {"detect": True, "image": b"\x89PNG....", "image_id": {"nested": 1}, "Bad Key": 1}
    with AuditLog(path) as log:
        log.append(rec)
    entry = json.loads(path.read_text())
    assert entry["options"] == {"detect": True}
    assert "PNG" not in path.read_text()
    rec.content_hash = "patient-1234"
    with AuditLog(path) as log, pytest.raises(InvalidArgument, match="content_hash"):
        log.append(rec)


def test_sanitize_options_keeps_scalars_and_short_lists() -> None:
    clean = sanitize_options(
        {"models": ["svm", "xgboost"], "threshold": float("nan"), "note": "x" * 500, "raw": bytearray(3)}
    )
    assert clean == {"models": ["svm", "xgboost"], "threshold": None, "note": "x" * 128}


def test_options_from_message_takes_only_set_option_fields() -> None:
    options = analysis_pb2.AnalyzeOptions(models=["svm"], detect=True, explain_class="myeloblast")
    assert options_from_message(options) == {"models": ["svm"], "detect": True, "explain_class": "myeloblast"}
    request = analysis_pb2.AnalyzeRequest(options=options)
    request.image.data = b"\xff\xd8 jpeg bytes"
    assert options_from_message(request) == {}  # message fields (the image) are never taken


def test_cli_verify_exits_zero_on_intact_and_one_on_tampered(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    hashes = write_log(path, 4)
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", str(path)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    assert hashes[-1] in ok.output
    path.write_text("".join(delete(lines(path))))
    broken = runner.invoke(main, ["audit", "verify", str(path), "--json"])
    assert broken.exit_code == 1
    report = json.loads(broken.stdout)
    assert (report["ok"], report["first_bad_line"], report["records"]) == (False, 3, 2)


def test_cli_verify_with_key_and_anchor(tmp_path: Path) -> None:
    path, key_file = tmp_path / "audit.jsonl", tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")
    os.chmod(key_file, 0o600)
    hashes = write_log(path, 2, key=KEY)
    runner = CliRunner()
    args = ["audit", "verify", str(path), "--key-file", str(key_file), "--anchor", hashes[0]]
    assert runner.invoke(main, args).exit_code == 0
    assert runner.invoke(main, ["audit", "verify", str(path)]).exit_code == 1
    assert runner.invoke(main, ["audit", "verify", str(tmp_path / "absent.jsonl")]).exit_code == 1


# ---------------------------------------------------------------------------------------------- formats

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def _old_line(n: int, version: int, prev_hash: str) -> tuple[str, str]:
    """A line as format ``version`` wrote it (v1: no peer; v2: a peer, no trace id), and its hash."""
    entry: dict[str, Any] = {
        "v": version,
        "seq": n,
        "time": "2026-01-01T00:00:00.000000+00:00",
        "alg": "sha256",
        "prev_hash": prev_hash,
        "caller_id": "lis-north",
        "content_hash": hashlib.sha256(f"pixels-{n}".encode()).hexdigest(),
        "options": {},
        "model_versions": {"classifier": "v1"},
        "outcome": "OK",
        "parts": {"classification": "OK"},
        "latency_ms": 1.5,
        "rpc": "Analyze",
    }
    if version == 2:
        entry["peer"] = "ipv4:10.0.0.7:51234"
    entry["hash"] = entry_hash(entry)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n", entry["hash"]


def test_records_carry_the_trace_id_in_format_3(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append(replace(record(1), trace_id=TRACE_ID))
        log.append(record(2))  # untraced: an empty trace id
    entries = [json.loads(line) for line in lines(path)]
    assert [(e["v"], e["trace_id"]) for e in entries] == [(3, TRACE_ID), (3, "")]
    assert verify(path).ok
    with AuditLog(path) as log, pytest.raises(InvalidArgument, match="trace_id"):
        log.append(replace(record(3), trace_id="not-a-trace-id"))


def test_the_trace_id_is_hashed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append(replace(record(1), trace_id=TRACE_ID))
        log.append(record(2))
    edited = lines(path)
    edited[0] = edited[0].replace(TRACE_ID, "f" * 32)
    path.write_text("".join(edited))
    result = verify(path)
    assert (result.ok, result.first_bad_line) == (False, 1)
    assert "edited" in result.message


def test_a_log_of_format_1_2_and_3_lines_verifies_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, head = _old_line(1, 1, GENESIS_HASH)
    second, head = _old_line(2, 2, head)
    path.write_text(first + second)
    with AuditLog(path) as log:  # resumes after a format 2 line
        assert log.head == (2, head)
        log.append(replace(record(3), trace_id=TRACE_ID))
    assert [json.loads(line)["v"] for line in lines(path)] == [1, 2, 3]
    outcome = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert outcome.exit_code == 0, outcome.output
    assert "3 records" in outcome.output


def test_an_old_format_line_with_a_trace_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    line, _ = _old_line(1, 2, GENESIS_HASH)
    entry = json.loads(line)
    entry["trace_id"] = TRACE_ID
    entry["hash"] = entry_hash(entry)
    path.write_text(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")
    result = verify(path)
    assert (result.ok, result.first_bad_line) == (False, 1)
    assert "fields missing or added" in result.message
