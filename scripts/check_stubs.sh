#!/usr/bin/env bash
# Fails when hemascope/v1 differs from what scripts/gen_protos.sh generates from protos/ (hand edits or a
# proto change without regenerating).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/gen_protos.sh "$tmp" >/dev/null
status=0
for file in "$tmp"/hemascope/v1/*; do
  name=$(basename "$file")
  if ! diff -u "hemascope/v1/$name" "$file"; then
    status=1
  fi
done
for file in hemascope/v1/*_pb2*.py*; do
  [ -e "$tmp/hemascope/v1/$(basename "$file")" ] || { echo "stale generated file: $file"; status=1; }
done
if [ $status -ne 0 ]; then
  echo "generated stubs are out of date: run scripts/gen_protos.sh and commit the result" >&2
  exit 1
fi
echo "stubs: up to date"
