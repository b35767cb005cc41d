#!/usr/bin/env bash
# Regenerates the Python stubs from protos/ into hemascope/v1 (or into $1, for the drift check).
# Messages: grpcio-tools (--python_out, --pyi_out). Services: grpcio-tools (--grpc_python_out) plus
# mypy-protobuf's typed service stubs (--mypy_grpc_out). Never edit the generated files by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
venv_bin=${VENV_BIN:-$root/.venv/bin}
mkdir -p "$out/hemascope/v1"
cd "$root"
PATH="$venv_bin:$PATH" "$venv_bin/python" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" --mypy_grpc_out="$out" \
  protos/hemascope/v1/*.proto
