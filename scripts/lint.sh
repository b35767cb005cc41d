#!/usr/bin/env bash
# Static checks CI runs: ruff (lint + format), mypy, the import direction (import-linter), generated-code
# drift (the Python stubs, and the TypeScript client, which is also type-checked), buf lint and buf breaking
# (against where this branch left main), the deploy checks, and a short fuzzing run (45 s over every fuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
scripts/check_stubs.sh
scripts/check_ts_client.sh
if [ ! -x .tools/node_modules/.bin/buf ]; then
  mkdir -p .tools
  (cd .tools && npm install --no-save --no-audit --no-fund --silent @bufbuild/buf@1.75.0)
fi
.tools/node_modules/.bin/buf lint
# Wire compatibility: no field, message or RPC of the contracts removed or changed since main.
base=$(git merge-base HEAD main 2>/dev/null || true)
if [ -n "$base" ]; then
  .tools/node_modules/.bin/buf breaking --against "$(git rev-parse --git-common-dir)#ref=$base"
else
  echo "buf breaking: no main branch in this clone; skipped"
fi
scripts/deploy_check.sh   # Dockerfiles and Kubernetes manifests: hadolint, kustomize, schemas, checkov, properties
scripts/fuzz.sh 45
echo "lint: ok"
