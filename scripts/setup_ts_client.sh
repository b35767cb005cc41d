#!/usr/bin/env bash
# Installs the TypeScript client's node packages (clients/typescript/node_modules) exactly as
# package-lock.json pins them (npm ci). Idempotent and quick: skipped when the installed packages were made
# from the current lock file.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"
command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js 20 or later" >&2; exit 1; }
stamp=node_modules/.installed-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x node_modules/.bin/tsc ]; then
  exit 0
fi
npm ci --no-audit --no-fund --silent
echo "$want" >"$stamp"
