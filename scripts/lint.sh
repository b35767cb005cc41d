#!/usr/bin/env bash
# Static checks CI runs: ruff (lint + format), mypy, generated-stub drift, buf lint.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
scripts/check_stubs.sh
if [ ! -x .tools/node_modules/.bin/buf ]; then
  mkdir -p .tools
  (cd .tools && npm install --no-save --no-audit --no-fund --silent @bufbuild/buf@1.75.0)
fi
.tools/node_modules/.bin/buf lint
scripts/deploy_check.sh   # Dockerfiles and Kubernetes manifests: hadolint, kustomize, schemas, checkov, properties
echo "lint: ok"
