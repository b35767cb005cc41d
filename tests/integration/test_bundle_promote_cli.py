"""``hemascope bundle promote`` against the real gateway and classifier (mutual TLS between them, the stack
of tests.promotion_helpers, as the console's promotion is tested): an admin key promotes after the prompt
or with --yes, and the gateway audits it; a declined prompt, a key without the admin role, a bundle that
does not load, a gateway that cannot be reached and a missing key each end with their own line and exit
status, and nothing is promoted."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hemascope.cli import main
from tests.promotion_helpers import promotion_stack, serving

#: The environment the command could also read its address and key from: unset, so only options count.
CLEAN_ENV: dict[str, str | None] = {"HEMASCOPE_API_KEY": None, "HEMASCOPE_GATEWAY_ADDRESS": None}


@pytest.fixture(scope="module")
def stack(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with promotion_stack(bundles["v1"], tmp_path_factory.mktemp("promotion")) as made:
        yield made


def promote(stack: dict[str, Any], *args: str, key: str | None = None, answer: str | None = None) -> Result:
    options = ["--address", stack["address"]] + (["--api-key", key] if key else [])
    return CliRunner(env=CLEAN_ENV).invoke(main, ["bundle", "promote", *args, *options], input=answer)


def promotions(stack: dict[str, Any]) -> list[dict[str, Any]]:
    lines = Path(stack["audit"]).read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["rpc"] == "PromoteBundle"]


def versions(stack: dict[str, Any]) -> tuple[str, str]:
    """(the version served now, the other one)."""
    now = serving(stack["classifier_port"], stack["pki"])
    return now, "v2" if now == "v1" else "v1"


def test_an_admin_key_promotes_with_yes_and_the_gateway_audits_it(
    stack: dict[str, Any], bundles: dict[str, Path]
) -> None:
    before, target = versions(stack)
    result = promote(stack, str(bundles[target]), "--yes", key=stack["admin"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"promoted: bundle {target} now serving (was {before}; 5 models)\n"
    assert serving(stack["classifier_port"], stack["pki"]) == target
    record = promotions(stack)[-1]
    assert (record["caller_id"], record["outcome"]) == ("model-ops", "OK")
    assert record["options"] == {"path": str(bundles[target])}


def test_the_prompt_names_both_bundles_and_only_yes_promotes(
    stack: dict[str, Any], bundles: dict[str, Path]
) -> None:
    before, target = versions(stack)
    audited = len(promotions(stack))
    declined = promote(stack, str(bundles[target]), key=stack["admin"], answer="n\n")
    assert declined.exit_code == 1
    assert f"serves bundle {before}" in declined.stderr
    assert f"{bundles[target]} (bundle {target})" in declined.stderr
    assert "not confirmed; nothing was promoted" in declined.stderr
    no_answer = promote(stack, str(bundles[target]), key=stack["admin"], answer="")
    assert no_answer.exit_code == 1 and "nothing was promoted" in no_answer.stderr
    assert serving(stack["classifier_port"], stack["pki"]) == before
    assert len(promotions(stack)) == audited  # the gateway was never asked
    confirmed = promote(stack, str(bundles[target]), "--json", key=stack["admin"], answer="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert json.loads(confirmed.stdout) == {
        "path": str(bundles[target]),
        "bundle_version": target,
        "previous_version": before,
        "model_count": 5,
    }
    assert serving(stack["classifier_port"], stack["pki"]) == target


def test_a_key_without_the_admin_role_is_a_usage_error(
    stack: dict[str, Any], bundles: dict[str, Path]
) -> None:
    before, target = versions(stack)
    result = promote(stack, str(bundles[target]), "--yes", key=stack["caller"])
    assert result.exit_code == 2
    assert "does not have the admin role" in result.stderr and "--role admin" in result.stderr
    assert serving(stack["classifier_port"], stack["pki"]) == before
    record = promotions(stack)[-1]
    assert (record["caller_id"], record["outcome"]) == ("lis-north", "PERMISSION_DENIED")
    unknown = promote(stack, str(bundles[target]), "--yes", key="hsk_not-a-key")
    assert unknown.exit_code == 2 and "refused the API key" in unknown.stderr
    missing = promote(stack, str(bundles[target]), "--yes")
    assert missing.exit_code == 2 and "--api-key" in missing.stderr


def test_a_bundle_that_does_not_load_is_refused_and_the_previous_one_keeps_serving(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    before, _ = versions(stack)
    result = promote(stack, str(tmp_path), "--yes", key=stack["admin"])  # a folder without a manifest
    assert result.exit_code == 3
    assert "refused (BAD_BUNDLE)" in result.stderr and "the previous bundle keeps serving" in result.stderr
    assert serving(stack["classifier_port"], stack["pki"]) == before
    assert promotions(stack)[-1]["outcome"] == "FAILED_PRECONDITION"


def test_a_relative_path_that_is_not_here_is_refused_before_any_call(stack: dict[str, Any]) -> None:
    audited = len(promotions(stack))
    result = promote(stack, "no-such-bundle", "--yes", key=stack["admin"])
    assert result.exit_code == 2 and "absolute path as the classifier service sees it" in result.stderr
    assert len(promotions(stack)) == audited


def test_a_gateway_that_cannot_be_reached_fails_before_the_prompt(bundles: dict[str, Path]) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = promote({"address": f"127.0.0.1:{port}"}, str(bundles["v2"]), key="hsk_any")
    assert result.exit_code == 1
    assert f"cannot reach the gateway at 127.0.0.1:{port}" in result.stderr
    assert "serves" not in result.stderr  # nothing was asked
