#!/usr/bin/env bash
# The main job on a fresh machine: set up; `hemascope up` starts every service (feature, classifier,
# detector, explain) and the gateway as their own processes; `hemascope analyze` sends each capability the
# input it is meant for through the gateway: the single-cell samples to classification and explanation
# (panels and overlays to out/), the BCCD smear to detection (box drawings to out/); then everything stops
# cleanly on SIGTERM. `hemascope demo` is the older tour of the services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
STATE="$(mktemp -d)/up.json"
.venv/bin/hemascope up --free-ports --state-file "$STATE" &
UP=$!
stop() {
  if kill -0 "$UP" 2>/dev/null; then
    kill -TERM "$UP"
    wait "$UP"
  fi
}
trap stop EXIT
GATEWAY=""
for _ in $(seq 1 1200); do
  kill -0 "$UP" 2>/dev/null || { echo "hemascope up exited early" >&2; exit 1; }
  GATEWAY="$(.venv/bin/python -c 'import json, sys
try:
    children = json.load(open(sys.argv[1]))["children"]
except (OSError, ValueError):
    children = []
print(next((c["address"] for c in children if c["name"] == "gateway"), ""))' "$STATE")"
  [[ -n "$GATEWAY" ]] && break
  sleep 0.5
done
[[ -n "$GATEWAY" ]] || { echo "no gateway after 10 minutes" >&2; exit 1; }
echo
echo "== single cells: cell type, malignancy, refer flag, every model's vote, where the model looked =="
.venv/bin/hemascope analyze samples/*.jpg --address "$GATEWAY" --explain --out out/ --wait 600
echo
echo "== a blood smear: the cells the detector finds =="
.venv/bin/hemascope analyze samples/smear/*.jpg --address "$GATEWAY" --detect --no-classify --out out/
echo
echo "pictures in out/: <cell>-panel.png (the cell beside its heat map), <cell>-overlay.png, <smear>-boxes.png"
