#!/usr/bin/env bash
# Installs axe-core (tests/a11y/node_modules), the accessibility engine the console's browser tests inject
# into each page, exactly as package-lock.json pins it (npm ci). Idempotent and quick: skipped when the
# installed packages were made from the current lock file. Without it the accessibility test skips.
set -euo pipefail
cd "$(dirname "$0")/../tests/a11y"
command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js 20 or later" >&2; exit 1; }
stamp=node_modules/.installed-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f node_modules/axe-core/axe.min.js ]; then
  exit 0
fi
npm ci --no-audit --no-fund --silent
echo "$want" >"$stamp"
