"""End-to-end: ``--preprocessing`` on ``hemascope serve feature`` and ``hemascope embed``."""

from __future__ import annotations

from pathlib import Path

from hemascope.imaging.preprocess import PREPROCESSING
from tests.e2e.test_serve_cli import COMMAND_TIMEOUT, cli_env, json_lines, run_cli, start_serve

IMAGENET = "efficientnet_lite0"  # serves every option; the fine-tuned default serves only its own


def test_serve_with_an_unknown_option_exits_2(model_cache_dir: Path) -> None:
    serve = start_serve(cli_env(model_cache_dir), "--backbone", IMAGENET, "--preprocessing", "sepia")
    try:
        code = serve.process.wait(timeout=COMMAND_TIMEOUT)
    finally:
        serve.kill()
    assert code == 2, serve.text
    assert "cannot start" in serve.text and "sepia" in serve.text and "cellcrop" in serve.text


def test_serve_and_embed_with_cellcrop(model_cache_dir: Path, real_images: list[Path]) -> None:
    image = str(real_images[0])
    serve = start_serve(cli_env(model_cache_dir), "--backbone", IMAGENET, "--preprocessing", "cellcrop")
    try:
        address = f"127.0.0.1:{serve.wait_serving()['port']}"
        remote = run_cli(cli_env(model_cache_dir), "embed", "--address", address, "--json", image)
        wrong = run_cli(
            cli_env(model_cache_dir),
            "embed",
            "--address",
            address,
            "--preprocessing",
            "plain",
            "--json",
            image,
        )
    finally:
        serve.kill()
    local = run_cli(
        cli_env(model_cache_dir),
        "embed",
        "--backbone",
        IMAGENET,
        "--preprocessing",
        "cellcrop",
        "--json",
        image,
    )
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    expected = PREPROCESSING["cellcrop"].version
    assert json_lines(remote.stdout)[0]["preprocessing"] == expected
    assert json_lines(local.stdout)[0]["preprocessing"] == expected
    assert (
        wrong.returncode == 1
        and "FAILED_PRECONDITION" in wrong.stdout
        and "runs preprocessing" in wrong.stdout
    )
