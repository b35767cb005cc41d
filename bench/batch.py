"""``python bench/batch.py``: the batch-analysis benchmark; the code and its description are in
``bench/batch_bench.py``. This launcher keeps the documented command name: as a module it would shadow
the ``batch`` package (mypy skips it, see pyproject.toml), so it imports nothing from there."""

from batch_bench import main

if __name__ == "__main__":
    main()
