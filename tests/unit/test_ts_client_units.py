"""The TypeScript client's own unit tests (clients/typescript/test/units.test.ts: KServe tensor packing,
connection options), run with ``node --test``."""

from __future__ import annotations

from tests.ts_helpers import compiled_scripts, run_node


def test_typescript_client_unit_tests() -> None:
    done = run_node(["--test", str(compiled_scripts() / "units.test.js")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout
    assert "# pass 9" in done.stdout
