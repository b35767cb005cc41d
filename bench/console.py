"""``python bench/console.py``: the console benchmark; the code and its description are in
``bench/console_bench.py``. This launcher keeps the documented command name: its folder goes to the end of
the import path first, so that ``console`` is the console package, not this file (mypy skips it, see
pyproject.toml)."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != HERE] + [HERE]
sys.modules.pop("console", None)

from console_bench import main  # noqa: E402

if __name__ == "__main__":
    main()
