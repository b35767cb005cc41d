#!/usr/bin/env bash
# Runs every fuzzer (fuzz/*.py, atheris/libFuzzer) for SECONDS in total (default 45, shared equally), one
# after another; exits non-zero on the first crash, whose input is in fuzz-artifacts/. Longer runs and
# their figures: docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-45}
targets=(decode bundle converters)
each=$(( total / ${#targets[@]} ))
for target in "${targets[@]}"; do
  log=$(mktemp)
  if ! .venv/bin/python -m "fuzz.$target" -max_total_time="$each" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target crashed (input in fuzz-artifacts/)" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $target: $runs inputs in ${each}s, no crash"
  rm -f "$log"
done
