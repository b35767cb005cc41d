"""What every fuzzer shares: seeds written to a fresh corpus folder, libFuzzer's options, and the rule that
decides a crash: the target may raise a domain error (:class:`~hemascope.errors.HemascopeError`, the
caller's fault answered with a status code) and nothing else."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from hemascope.errors import HemascopeError

Target = Callable[[bytes], None]


def expected(call: Callable[[], object]) -> None:
    """Runs ``call``; a domain error is an answer, anything else propagates (a crash)."""
    with contextlib.suppress(HemascopeError):
        call()


def run(name: str, target: Target, seeds: Iterable[bytes], argv: list[str] | None = None) -> None:
    """Fuzzes ``target`` with libFuzzer (atheris), starting from ``seeds``; options from ``argv``
    (e.g. ``-max_total_time=20``). Crashing inputs are written to ``fuzz-artifacts/<name>-*``."""
    import atheris

    args = list(sys.argv if argv is None else argv)
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    artifacts = Path("fuzz-artifacts")
    artifacts.mkdir(exist_ok=True)
    defaults = [
        f"-artifact_prefix={artifacts}/{name}-",
        "-rss_limit_mb=3072",
        "-timeout=20",
        "-max_len=262144",
        "-print_final_stats=1",
    ]
    atheris.Setup([args[0], *defaults, *args[1:], str(corpus)], target)
    atheris.Fuzz()
