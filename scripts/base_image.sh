#!/usr/bin/env bash
# Makes the local base image the service images build on when no container registry can be reached: a
# minimal Debian bookworm root file system (debootstrap) with Python 3.11, venv and pip, imported as
# ${HEMASCOPE_BASE_IMAGE:-hemascope-base/debian:bookworm-python}. It offers what the Dockerfile expects of
# its base (the official python:3.11-slim-bookworm offers the same): /usr/local/bin/python with pip.
# Idempotent: does nothing when the image exists (--force rebuilds it). Needs root, debootstrap and a
# Debian mirror (HEMASCOPE_DEBIAN_MIRROR).
set -euo pipefail
cd "$(dirname "$0")/.."
docker=${DOCKER:-/usr/bin/docker}
image=${HEMASCOPE_BASE_IMAGE:-hemascope-base/debian:bookworm-python}
mirror=${HEMASCOPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "${1:-}" != "--force" ] && "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
root=$(mktemp -d /tmp/hemascope-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3.11,python3.11-venv,python3-pip,ca-certificates,libgomp1 \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
# Smaller: documentation, locales other than C, apt lists and caches are not needed to run Python.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
  "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} + 2>/dev/null || true
tar -C "$root" -c . | "$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python"]' \
  - "$image" >/dev/null
echo "base image $image made: $("$docker" image inspect --format '{{.Size}}' "$image") bytes"
