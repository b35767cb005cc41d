#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment at .venv with the hemascope command, PyTorch (for ONNX
# export and parity checks) and the development tools, and the TypeScript client's node packages
# (clients/typescript, npm ci; its interop test needs them). Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 install from local disk here (see pyproject.toml).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[torch,train,dev,batch]'
.venv/bin/hemascope --help >/dev/null
scripts/setup_ts_client.sh
