#!/usr/bin/env bash
# Regenerates the TypeScript client's generated code (clients/typescript/src/gen) with buf and
# protoc-gen-es, from protos/ and the KServe v2 contract the gateway serves (clients/typescript/kserve/
# kserve_v2.binpb, rewritten first from tritonclient's generated modules by scripts/kserve_descriptor.py).
# With OUT, writes the descriptor to OUT/kserve and the code to OUT/src/gen instead (the drift check).
# Never edit the generated files by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
client="$root/clients/typescript"
out=${1:-$client}
venv_bin=${VENV_BIN:-$root/.venv/bin}
"$root/scripts/setup_ts_client.sh"
"$venv_bin/python" "$root/scripts/kserve_descriptor.py" "$out/kserve/kserve_v2.binpb"
if [ "$out" != "$client" ] && ! cmp -s "$out/kserve/kserve_v2.binpb" "$client/kserve/kserve_v2.binpb"; then
  # The template generates from the committed descriptor: it must be the one just written.
  echo "clients/typescript/kserve/kserve_v2.binpb is out of date: run scripts/gen_ts_client.sh" >&2
  exit 1
fi
cd "$client"
node_modules/.bin/buf generate --template buf.gen.yaml --output "$out"
