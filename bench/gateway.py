"""``python bench/gateway.py``: the gateway benchmark; the code and its description are in
``bench/gateway_bench.py``. This launcher keeps the documented command name: as a module it would shadow
the ``gateway`` package (mypy skips it, see pyproject.toml), so it imports nothing from there."""

from gateway_bench import main

if __name__ == "__main__":
    main()
