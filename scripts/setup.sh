#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment at .venv with the hemascope command, PyTorch (for ONNX
# export and parity checks) and the development tools, and the TypeScript client's node packages
# (clients/typescript, npm ci; its interop test needs them) and axe-core for the console's accessibility
# test (tests/a11y, npm ci). Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# The console's browser tests drive Debian's Chromium (Playwright cannot download browsers here); as root,
# install it when missing. Without it those tests skip, saying so.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y chromium >/dev/null \
      || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; } \
      || echo "setup: could not install chromium; the console's browser tests will be skipped" >&2
  else
    echo "setup: /usr/bin/chromium is missing (apt-get install chromium as root); the console's browser tests will be skipped" >&2
  fi
fi
# torch==2.14.1 / torchvision==0.29.1 install from local disk here (see pyproject.toml).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[torch,train,dev,batch,console]'
.venv/bin/hemascope --help >/dev/null
scripts/setup_ts_client.sh
scripts/setup_a11y.sh
