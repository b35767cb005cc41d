#!/usr/bin/env bash
# Fails when the TypeScript client's generated code (clients/typescript/src/gen) or its KServe descriptor
# differ from what scripts/gen_ts_client.sh makes (a proto change without regenerating, or a hand edit),
# or when the client, or an example of it in docs/gateway.md or clients/typescript/README.md, does not
# type-check.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/scripts/gen_ts_client.sh" "$tmp" >/dev/null
client="$root/clients/typescript"
status=0
cmp -s "$tmp/kserve/kserve_v2.binpb" "$client/kserve/kserve_v2.binpb" || {
  echo "clients/typescript/kserve/kserve_v2.binpb is out of date"
  status=1
}
diff -ru "$client/src/gen" "$tmp/src/gen" || status=1
if [ $status -ne 0 ]; then
  echo "TypeScript client is out of date: run scripts/gen_ts_client.sh and commit the result" >&2
  exit 1
fi
(cd "$client" && node_modules/.bin/tsc -p tsconfig.json --noEmit)
# The documented examples (```ts blocks), each a module of its own, against the client's sources.
examples=$(mktemp -d -p "$client" .examples.XXXXXX)
trap 'rm -rf "$tmp" "$examples"' EXIT
for doc in "$root/docs/gateway.md" "$client/README.md"; do
  awk -v out="$examples/$(basename "$doc" .md)" '
    /^```ts$/ { n++; file = out "-" n ".ts"; inside = 1; next }
    /^```/ { inside = 0; next }
    inside { sub(/"@hemascope\/client"/, "\"../src/index.js\""); print > file }
  ' "$doc"
done
cat >"$examples/tsconfig.json" <<JSON
{"extends": "../tsconfig.json", "compilerOptions": {"rootDir": "..", "noEmit": true}, "include": ["*.ts"]}
JSON
(cd "$client" && node_modules/.bin/tsc -p "$examples/tsconfig.json")
echo "typescript client: up to date"
