"""ApiKeyStore and key files: hashed at rest, right key -> caller id, wrong or missing key -> None."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.auth import (
    ADMIN_ROLE,
    ANONYMOUS,
    KEY_PREFIX,
    ApiKeyStore,
    add_key,
    generate_key,
    hash_key,
    validate_caller_id,
)
from gateway.identity import Identifier
from hemascope.cli import main
from hemascope.errors import ConfigurationError, InvalidArgument


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_generated_keys_are_long_random_and_distinct() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) - len(KEY_PREFIX) >= 43  # 32 random bytes, URL-safe base64


def test_key_file_holds_the_hash_never_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    key = add_key(path, "lis-north")
    text = path.read_text()
    assert key not in text
    assert key[len(KEY_PREFIX) :] not in text
    record = json.loads(text)
    assert record["caller_id"] == "lis-north"
    assert record["key_hash"] == hash_key(key)
    assert record["created"].endswith("+00:00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_right_key_gives_its_caller_and_wrong_or_missing_keys_give_none(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    north, south = add_key(path, "lis-north"), add_key(path, "lis-south")
    store = ApiKeyStore.from_file(path)
    assert len(store) == 2
    assert store.callers == {"lis-north", "lis-south"}
    assert store.caller_for(north) == "lis-north"
    assert store.caller_for(south) == "lis-south"
    assert store.caller_for(generate_key()) is None
    assert store.caller_for(north[:-1]) is None
    assert store.caller_for(north + "x") is None
    assert store.caller_for("") is None
    assert store.caller_for("x" * 10_000) is None
    assert store.caller_for(hash_key(north)) is None  # the stored hash is not a key


def test_a_caller_may_hold_several_keys_for_rotation(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    old, new = add_key(path, "lab"), add_key(path, "lab")
    store = ApiKeyStore.from_file(path)
    assert store.caller_for(old) == store.caller_for(new) == "lab"


def test_store_picks_up_added_and_revoked_keys_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    first = add_key(path, "lab-a")
    store = ApiKeyStore.from_file(path, reload_interval_s=0.0)
    second = add_key(path, "lab-b")
    assert store.caller_for(second) == "lab-b"
    lines = path.read_text().splitlines()
    path.write_text(lines[1] + "\n")  # revoke lab-a's key
    assert store.caller_for(first) is None
    assert store.caller_for(second) == "lab-b"


@pytest.mark.parametrize("damage", ["malformed", "deleted", "unreadable-bytes"])
def test_a_broken_key_file_revokes_every_key_until_it_is_valid_again(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "keys.jsonl"
    key = add_key(path, "lab-a")
    good = path.read_bytes()
    clock = Clock()
    store = ApiKeyStore.from_file(path, reload_interval_s=2.0, clock=clock)
    if damage == "malformed":
        path.write_text("{not json\n")
    elif damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"\xff\xfe not utf-8\n")
    assert store.caller_for(key) == "lab-a"  # not re-read before the interval has passed
    clock.now = 2.0
    assert store.caller_for(key) is None  # fail closed: the old keys are not kept
    assert len(store) == 0
    clock.now = 4.0
    assert store.caller_for(key) is None  # still broken: still closed
    path.write_bytes(good + b"\n")
    clock.now = 6.0
    assert store.caller_for(key) == "lab-a"  # a valid file brings the keys back


def test_comments_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    key = generate_key()
    record = {"caller_id": "lab", "key_hash": hash_key(key), "created": "2025-01-01T00:00:00+00:00"}
    path.write_text(f"# keys of the test\n\n{json.dumps(record)}\n")
    assert ApiKeyStore.from_file(path).caller_for(key) == "lab"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("{not json", "line 2"),
        ('{"caller_id": "lab"}', "key_hash"),
        ('{"caller_id": "lab", "key_hash": "plain-text-key"}', "sha256:"),
        ('{"caller_id": "lab", "key_hash": "sha256:abcd"}', "64 hex"),
        ('{"caller_id": "Jane Doe", "key_hash": "sha256:' + "0" * 64 + '"}', "caller id"),
        ('{"caller_id": "lab", "key_hash": "sha256:' + "0" * 64 + '", "role": "Admin"}', "role"),
        ('{"caller_id": "lab", "key_hash": "sha256:' + "0" * 64 + '", "role": true}', "role"),
    ],
)
def test_malformed_key_files_are_refused_with_the_line(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(ConfigurationError) as info:
        ApiKeyStore.from_file(path)
    assert "line 2" in info.value.message
    assert words in info.value.message


def test_missing_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read API key file"):
        ApiKeyStore.from_file(tmp_path / "absent.jsonl")


@pytest.mark.parametrize("bad", ["", "anonymous", "Jane Doe", "a/b", "-lead", "x" * 65, "é"])
def test_caller_ids_are_restricted(bad: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        validate_caller_id(bad)
    with pytest.raises(InvalidArgument):
        add_key(tmp_path / "keys.jsonl", bad)
    assert not (tmp_path / "keys.jsonl").exists()


def test_required_auth_without_a_store_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="API_KEYS_FILE"):
        Identifier(None, required=True)
    Identifier(None, required=False)  # auth off is allowed


def test_cli_add_key_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    result = CliRunner().invoke(main, ["gateway", "add-key", "lis-north", "--keys-file", str(path)])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith(KEY_PREFIX)
    assert key not in path.read_text()
    assert ApiKeyStore.from_file(path).caller_for(key) == "lis-north"


def test_cli_add_key_refuses_a_bad_caller_id(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    result = CliRunner().invoke(main, ["gateway", "add-key", ANONYMOUS, "--keys-file", str(path)])
    assert result.exit_code == 2
    assert "caller id" in result.output
    assert not path.exists()


def test_a_keys_role_makes_its_caller_admin_and_defaults_to_caller(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    plain, admin = add_key(path, "lis-north"), add_key(path, "model-ops", ADMIN_ROLE)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert "role" not in records[0] and records[1]["role"] == "admin"
    store = ApiKeyStore.from_file(path)
    assert store.holder_for(admin) is not None and store.holder_for(admin).admin  # type: ignore[union-attr]
    assert store.holder_for(plain) is not None and not store.holder_for(plain).admin  # type: ignore[union-attr]
    identifier = Identifier(store, required=True)
    assert identifier.identify((("x-api-key", admin),), "ipv4:1", {}).admin
    assert not identifier.identify((("x-api-key", plain),), "ipv4:1", {}).admin
    with pytest.raises(InvalidArgument, match="role"):
        add_key(path, "lab", "root")


def test_cli_add_key_with_the_admin_role(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    args = ["gateway", "add-key", "model-ops", "--role", "admin", "--keys-file", str(path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    holder = ApiKeyStore.from_file(path).holder_for(result.stdout.strip())
    assert holder is not None and holder.caller_id == "model-ops" and holder.admin
