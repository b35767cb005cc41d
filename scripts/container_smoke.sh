#!/usr/bin/env bash
# Smoke test of the built images, run as deploy/compose.yaml deploys them: Redis and every service on the
# internal `backend` network, the gateway also on `frontend` with TLS, API keys and an audit file. Checks:
#   - every container's Docker health check healthy, and every service SERVING as seen from the gateway;
#   - one Analyze with detection and explanation through the gateway (the project's CLI in a client
#     container on `frontend`), and one KServe v2 ModelInfer with tritonclient's client;
#   - the caches reached Redis with its password; the call is in the gateway's audit file;
#   - every container runs as a non-root user on a read-only root file system (docker inspect, and `id -u`);
#   - the gateway's published port answers a health check from the host, where a .venv has the CLI;
#   - the console (a container on `frontend`) answers on its published port and lets a listed key log in,
#     which it checks with the gateway over TLS.
# Everything is torn down at the end, also on failure. Start-up times are written to build/startup.tsv.
#
# Environment: HEMASCOPE_IMAGES / HEMASCOPE_TAG (the images, default hemascope/<target>:dev), DOCKER
# (client, default Debian's /usr/bin/docker), HEMASCOPE_VENV (a venv with the hemascope CLI, default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
docker=${DOCKER:-/usr/bin/docker}
export HEMASCOPE_IMAGES=${HEMASCOPE_IMAGES:-hemascope} HEMASCOPE_TAG=${HEMASCOPE_TAG:-dev}
gateway_image=$HEMASCOPE_IMAGES/gateway:$HEMASCOPE_TAG
project=hemascope-smoke-$$
venv=${HEMASCOPE_VENV:-.venv}
if "$docker" compose version >/dev/null 2>&1; then
  compose=("$docker" compose)
else
  compose=(docker-compose)
fi
work=$(mktemp -d /tmp/hemascope-smoke.XXXXXX)
mkdir -p build
passed=0
ok() {
  passed=$((passed + 1))
  echo "smoke: $*"
}
fail() {
  echo "smoke: FAILED: $*" >&2
  echo "smoke: $passed passed, 1 failed"
  exit 1
}
dc() { "${compose[@]}" -p "$project" -f deploy/compose.yaml --project-directory "$work" "$@"; }
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "smoke: container logs (last lines each):" >&2
    dc logs --no-color --tail 15 >&2 2>&1 || true
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

# --- secrets and the audit folder, owned by the services' user ------------------------------------------------
mkdir -p "$work/secrets/tls" "$work/audit" "$work/client"
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$work/secrets/redis-password"
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$work/secrets/cache.key"
# The TLS material: a throw-away CA and the gateway's certificate (named `gateway`, as callers address it).
tls=$work/secrets/tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=hemascope-smoke-ca \
  -keyout "$work/ca-key.pem" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=gateway \
  -keyout "$tls/gateway-key.pem" -out "$work/gateway.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=DNS:gateway,DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
  'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >"$work/gateway.ext"
openssl x509 -req -in "$work/gateway.csr" -CA "$tls/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial -days 2 \
  -extfile "$work/gateway.ext" -out "$tls/gateway.pem" 2>/dev/null
cp "$tls/ca.pem" "$work/client/ca.pem"
# An API key, made with the gateway image's own CLI: only its hash is stored, the key is printed once.
"$docker" run --rm --network none --user 0 -v "$work/secrets:/secrets" "$gateway_image" \
  gateway add-key --keys-file /secrets/api-keys.jsonl smoke-test >"$work/client/api-key"
key=$(tail -n 1 "$work/client/api-key" | tr -d '[:space:]')
[ -n "$key" ] || fail "no API key made"
# The console's users file (that key as a reviewer) and its cookie secret.
"$docker" run --rm --network none --user 0 -v "$work/secrets:/secrets" -e HEMASCOPE_API_KEY="$key" "$gateway_image" \
  console add-user smoke-reviewer --role reviewer --users-file /secrets/console-users.jsonl >/dev/null
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$work/secrets/console.secret"
chown -R 10001:10001 "$work/secrets" "$work/audit"
chmod -R go-rwx "$work/secrets"
chmod -R a+rX "$work/client"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export HEMASCOPE_GATEWAY_PUBLISH=127.0.0.1:$port
console_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export HEMASCOPE_CONSOLE_PUBLISH=127.0.0.1:$console_port
# The folders the console reads (relative defaults would resolve in the project directory, $work).
mkdir -p "$work/batch-results"
export HEMASCOPE_BUNDLES_DIR=$repo/models HEMASCOPE_REPORTS_DIR=$repo/reports \
  HEMASCOPE_BATCH_RESULTS_DIR=$work/batch-results

# --- up, and wait for every health check -------------------------------------------------------------------
echo "smoke: ${compose[*]} up (project $project, images $HEMASCOPE_IMAGES/*:$HEMASCOPE_TAG)"
t0=$(date +%s.%N)
dc up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log"; fail "compose up"; }
services=(redis feature classifier detector explain gateway console)
declare -A container
for service in "${services[@]}"; do
  container[$service]=$(dc ps -q "$service")
  [ -n "${container[$service]}" ] || fail "no container for $service"
done
deadline=$(($(date +%s) + 300))
while :; do
  pending=()
  for service in "${services[@]}"; do
    state=$("$docker" inspect --format '{{.State.Health.Status}}' "${container[$service]}")
    [ "$state" = healthy ] || pending+=("$service=$state")
  done
  [ "${#pending[@]}" -eq 0 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "not healthy after 300 s: ${pending[*]}"
  sleep 2
done
all_healthy=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')
ok "all ${#services[@]} containers healthy ${all_healthy} s after up"

# Start-up of each service: container start to its "serving" log line (the model loaded, port open).
printf 'service\tstarted_to_serving_s\n' >build/startup.tsv
for service in feature classifier detector explain gateway; do
  started=$("$docker" inspect --format '{{.State.StartedAt}}' "${container[$service]}")
  serving=$("$docker" logs "${container[$service]}" 2>&1 | grep -m 1 '"event": "serving"' || true)
  python3 - "$service" "$started" "$serving" >>build/startup.tsv <<'EOF'
import json, sys
from datetime import datetime
service, started, line = sys.argv[1:]
start = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00")
serving = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")) if line else None
print(f"{service}\t{(serving - start).total_seconds():.1f}" if serving else f"{service}\t?")
EOF
done
printf 'all_healthy_after_up\t%s\n' "$all_healthy" >>build/startup.tsv
awk -F '\t' '{ printf "  %-22s %s\n", $1, $2 }' build/startup.tsv

# Every service SERVING as the gateway sees it (over the backend network), the gateway over TLS.
for address in feature:50051 classifier:50052 detector:50053 explain:50054; do
  "$docker" exec "${container[gateway]}" hemascope health --quiet "$address" || fail "$address not SERVING"
done
"$docker" exec "${container[gateway]}" hemascope health --quiet --ca /run/secrets/tls-ca --server-name gateway \
  127.0.0.1:50050 || fail "gateway not SERVING"
ok "every service SERVING"

# --- calls through the gateway, from a client container on the frontend network ------------------------------
# shellcheck disable=SC2016  # a Go template, not shell
network=$("$docker" inspect --format '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' \
  "${container[gateway]}" | tr ' ' '\n' | grep frontend)
client() {
  "$docker" run --rm --network "$network" --read-only --tmpfs /tmp --user 10001:10001 --cap-drop ALL \
    -v "$work/client:/client:ro" -v "$repo/samples:/samples:ro" -e HEMASCOPE_API_KEY="$key" "$@"
}
mkdir -p "$work/out" && chown 10001:10001 "$work/out"
client -v "$work/out:/out" "$gateway_image" analyze --address gateway:50050 --ca /client/ca.pem --detect \
  --explain --json --out /out --timeout 120 /samples/smear/BloodImage_00002.jpg >"$work/analyze.json" \
  || { cat "$work/analyze.json"; fail "Analyze"; }
python3 - "$work/analyze.json" "$work/out" <<'EOF' || fail "Analyze answer"
import json, pathlib, sys
[record] = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
assert record["outcome"] == "ok", json.dumps(record)[:1000]
report = record["report"]
label = report["classification"]["consensus_label"]
boxes = report["detection"]["boxes"]
explanation = report["explanation"]
assert label and boxes and explanation["class_name"] and explanation["method"], json.dumps(report)[:1000]
pictures = sorted(path.name for path in pathlib.Path(sys.argv[2]).glob("*.png") if path.stat().st_size > 0)
assert any("overlay" in name for name in pictures) and any("boxes" in name for name in pictures), pictures
print(f"smoke: Analyze: {label}; {len(boxes)} cells detected; {explanation['method']} map of "
      f"{explanation['class_name']} by {explanation['model']}; pictures {', '.join(pictures)}")
EOF
passed=$((passed + 1))
cat >"$work/client/kserve.py" <<'EOF'
import os
import numpy as np
import tritonclient.grpc as triton

client = triton.InferenceServerClient("gateway:50050", ssl=True, root_certificates="/client/ca.pem")
headers = {"x-api-key": os.environ["HEMASCOPE_API_KEY"]}
assert client.is_server_live(headers=headers) and client.is_server_ready(headers=headers)
with open("/samples/MYO_0004.jpg", "rb") as handle:
    image = handle.read()
tensor = triton.InferInput("IMAGE", [1], "BYTES")
tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
result = client.infer("hemascope", [tensor], headers=headers)
label = result.as_numpy("LABEL")[0].decode()
probabilities = result.as_numpy("PROBABILITIES")
assert label and probabilities is not None and probabilities.size > 0
print(f"smoke: KServe v2 ModelInfer: label {label}, probabilities {probabilities.shape}")
EOF
client --entrypoint python "$gateway_image" /client/kserve.py || fail "KServe v2 call"
passed=$((passed + 1))

# Redis was used (the services' caches, with the password) and the calls were audited.
# shellcheck disable=SC2016  # expanded by the container's shell
keys=$("$docker" exec "${container[redis]}" sh -c 'REDISCLI_AUTH="$(cat /run/secrets/redis-password)" redis-cli dbsize')
[ "${keys:-0}" -gt 0 ] || fail "nothing cached in Redis ($keys keys)"
audited=$(wc -l <"$work/audit/audit.jsonl")
[ "$audited" -ge 2 ] || fail "audit file has $audited records"
ok "Redis holds $keys cached entries; $audited calls audited"

# --- hardening: non-root, read-only root file system ---------------------------------------------------------
for service in "${services[@]}"; do
  read -r user readonly < <("$docker" inspect --format '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}' \
    "${container[$service]}")
  uid=$("$docker" exec "${container[$service]}" id -u)
  case "$user" in "" | 0 | 0:* | root | root:*) fail "$service runs as '$user'" ;; esac
  [ "$uid" != 0 ] || fail "$service runs as uid 0"
  [ "$readonly" = true ] || fail "$service root file system is writable"
  if "$docker" exec "${container[$service]}" sh -c 'touch /opt/probe' 2>/dev/null; then
    fail "$service could write to its root file system"
  fi
done
ok "every container non-root (uid 10001) with a read-only root file system"

# The published port, from the host, where a venv has the CLI.
if [ -x "$venv/bin/hemascope" ]; then
  "$venv/bin/hemascope" health --quiet --ca "$work/client/ca.pem" --server-name gateway "127.0.0.1:$port" \
    || fail "published gateway port"
  ok "gateway SERVING on the published port 127.0.0.1:$port"
fi
# The console, from the host: its health page, then a login with the listed key (the console asks the gateway,
# over TLS on the frontend network, whether it accepts the key).
python3 - "$console_port" "$key" <<'EOF' || fail "console login"
import http.cookiejar, re, sys, urllib.parse, urllib.request
port, key = sys.argv[1:]
base = f"http://127.0.0.1:{port}"
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
with opener.open(f"{base}/healthz", timeout=30) as response:
    assert response.status == 200
with opener.open(f"{base}/login", timeout=30) as response:
    token = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode()).group(1)
form = urllib.parse.urlencode({"csrf_token": token, "api_key": key}).encode()
with opener.open(f"{base}/login", data=form, timeout=60) as response:
    page = response.read().decode()
assert "smoke-reviewer (reviewer)" in page, page[:2000]
print(f"smoke: console on the published port 127.0.0.1:{port}: smoke-reviewer logged in as reviewer")
EOF
passed=$((passed + 1))
if [ -n "${HEMASCOPE_IMAGES_STARTED:-}" ]; then
  echo "images: built and smoke-tested in $(($(date +%s) - HEMASCOPE_IMAGES_STARTED)) s"
fi
echo "smoke: $passed passed, 0 failed"
