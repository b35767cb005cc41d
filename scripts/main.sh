#!/usr/bin/env bash
# The main job on a fresh machine: set up, start the feature service as its own process, embed the sample
# images through it over gRPC (twice: the second pass is served from the embedding cache), stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/hemascope demo "$@"
