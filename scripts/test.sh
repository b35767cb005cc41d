#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite. Needs Redis at 127.0.0.1:6379 (tests use database 15).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
