#!/usr/bin/env bash
# Builds the service images and runs the container smoke test (scripts/container_smoke.sh). Idempotent;
# installs what it needs (Debian's docker.io, debootstrap, docker-compose) and starts a Docker engine if none
# answers. Called last by .ci/run.
#
#   1. a Docker engine: the one that answers, else dockerd started here (no iptables, no default bridge:
#      containers get no route out; build steps use the host's network to reach the package index);
#   2. the base image: HEMASCOPE_BASE_IMAGE if it exists, else made by scripts/base_image.sh (debootstrap);
#   3. the ONNX Runtime service targets, explain, the console and redis, every run (layers cached by
#      BuildKit), each one's size and build time written to build/images.tsv and printed;
#   4. the smoke test.
#
# Environment: HEMASCOPE_IMAGES (repository prefix, default hemascope), HEMASCOPE_TAG (default dev),
# HEMASCOPE_IMAGE_TARGETS (default: redis gateway classifier detector feature explain console),
# HEMASCOPE_SKIP_SMOKE=1 (build only), DOCKER (client, default Debian's /usr/bin/docker).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
mkdir -p build
export DOCKER_BUILDKIT=1
images=${HEMASCOPE_IMAGES:-hemascope}
tag=${HEMASCOPE_TAG:-dev}
targets=${HEMASCOPE_IMAGE_TARGETS:-redis gateway classifier detector feature explain console}
base=${HEMASCOPE_BASE_IMAGE:-hemascope-base/debian:bookworm-python}

# --- 1. tools and engine --------------------------------------------------------------------------------------
missing=()
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "images: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's client: it honours Dockerfile.dockerignore with BuildKit (a client without buildx does not).
export DOCKER=${DOCKER:-/usr/bin/docker}
docker=$DOCKER
if ! "$docker" info >/dev/null 2>&1; then
  echo "images: starting dockerd (log: build/dockerd.log)"
  nohup /usr/sbin/dockerd --iptables=false --ip6tables=false --bridge=none >build/dockerd.log 2>&1 &
  for _ in $(seq 60); do
    "$docker" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$docker" info >/dev/null || { tail -20 build/dockerd.log; exit 1; }
fi

# --- 2. base image and build inputs -----------------------------------------------------------------------
if [ "$base" = "hemascope-base/debian:bookworm-python" ]; then
  HEMASCOPE_BASE_IMAGE=$base scripts/base_image.sh
fi
"$docker" image inspect "$base" >/dev/null
# CAs this host trusts locally (a TLS-inspecting proxy in front of the package index): build stages only.
cat /usr/local/share/ca-certificates/*.crt >build/extra-ca.crt.new 2>/dev/null || true
if ! cmp -s build/extra-ca.crt.new build/extra-ca.crt; then mv build/extra-ca.crt.new build/extra-ca.crt; fi
rm -f build/extra-ca.crt.new
[ -s build/extra-ca.crt ] || rm -f build/extra-ca.crt
# PyTorch's CPU wheel index keeps CUDA out of the explain image; where it cannot be reached, PyPI's wheels.
torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
if [ -n "$torch_index" ] && ! python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
    "$torch_index/" >/dev/null 2>&1; then
  echo "images: $torch_index cannot be reached: PyTorch comes from PyPI (CUDA wheels) for explain"
  torch_index=
fi

# --- 3. build -----------------------------------------------------------------------------------------------
tsv=build/images.tsv
printf 'target\timage\tsize_bytes\tsize_mb\tbuild_s\n' >"$tsv"
for target in $targets; do
  t0=$(date +%s.%N)
  if ! "$docker" build --network host -f deploy/docker/Dockerfile --build-arg "BASE_IMAGE=$base" \
      --build-arg "TORCH_INDEX_URL=$torch_index" --target "$target" -t "$images/$target:$tag" . >"build/image-$target.log" 2>&1; then
    tail -40 "build/image-$target.log"
    echo "images: building $target failed (build/image-$target.log)"
    exit 1
  fi
  size=$("$docker" image inspect --format '{{.Size}}' "$images/$target:$tag")
  awk -v t="$target" -v i="$images/$target:$tag" -v s="$size" -v t0="$t0" -v t1="$(date +%s.%N)" \
    'BEGIN { printf "%s\t%s\t%d\t%.0f\t%.1f\n", t, i, s, s / 1e6, t1 - t0 }' >>"$tsv"
done
awk -F '\t' '{ printf "%-12s %-28s %12s %8s %8s\n", $1, $2, $3, $4, $5 }' "$tsv"
# Every code change makes new images (explain's is gigabytes): drop the untagged ones they replaced, and
# keep BuildKit's cache bounded, so repeated runs on one machine do not fill its disk.
"$docker" image prune -f >/dev/null
"$docker" builder prune -f --keep-storage "${HEMASCOPE_BUILD_CACHE:-20GB}" >/dev/null
echo "images: built in $(($(date +%s) - started)) s"

# --- 4. smoke test ------------------------------------------------------------------------------------------
if [ "${HEMASCOPE_SKIP_SMOKE:-0}" != 1 ]; then
  # The smoke test's closing line ("smoke: N passed, 0 failed") ends the output; it prints the total time.
  HEMASCOPE_IMAGES=$images HEMASCOPE_TAG=$tag HEMASCOPE_IMAGES_STARTED=$started scripts/container_smoke.sh
else
  echo "images: done in $(($(date +%s) - started)) s"
fi
