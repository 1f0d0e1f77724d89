#!/usr/bin/env bash
# The e2e tier on kind, for users and hosted CI: the same tests/e2e files as on the local
# cluster's real node, against a kind cluster with labelled pools.
#
#   e2e/kind.sh            create the cluster, build and load the images, run the e2e tier
#   e2e/kind.sh up         only create the cluster (idempotent) and load the images
#   e2e/kind.sh test       only run the e2e tier against it
#   e2e/kind.sh down       delete the cluster
#
# Needs docker, kind, kubectl and helm on PATH (`e2e/build-tools.sh kind helm` builds the
# pinned kind and helm; put the directory it prints on PATH).
# KUBETRAIN_KIND_CLUSTER names the cluster (default kubetrain-e2e); TORCH_INDEX_URL, when set,
# builds the CPU-only runtime image from that torch wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KUBETRAIN_KIND_CLUSTER:-kubetrain-e2e}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OPERATOR_IMAGE=kubetrain/operator:$VERSION
if [ -n "${TORCH_INDEX_URL:-}" ]; then VARIANT=cpu; else VARIANT=cuda; fi
RUNTIME_IMAGE=kubetrain/runtime:$VERSION-$VARIANT
KUBECONFIG_FILE=${KUBETRAIN_KIND_KUBECONFIG:-$HOME/.cache/kubetrain/kind-$CLUSTER.kubeconfig}
GPU_TAINT=nvidia.com/gpu=present:NoSchedule

log() { printf '[kind.sh] %s\n' "$*" >&2; }

# One CPU pool and two GPU-labelled pools, as on the local cluster (e2e/localcluster.py's
# NODE_POOLS); the GPU pools' nodes advertise nvidia.com/gpu as an extended resource.
cluster_config() {
  cat <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels: {kubetrain.io/pool: cpu}
  - role: worker
    labels: {kubetrain.io/pool: a100, nvidia.com/gpu.present: "true"}
  - role: worker
    labels: {kubetrain.io/pool: h100, nvidia.com/gpu.present: "true"}
YAML
}

advertise_gpus() {
  local node
  for node in $(kubectl --kubeconfig "$KUBECONFIG_FILE" get nodes -o name \
                  -l 'kubetrain.io/pool in (a100,h100)'); do
    kubectl --kubeconfig "$KUBECONFIG_FILE" taint --overwrite "$node" "$GPU_TAINT"
    kubectl --kubeconfig "$KUBECONFIG_FILE" patch "$node" --subresource=status --type=json \
      -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "8"}]'
  done
}

build_images() {
  log "building $OPERATOR_IMAGE and $RUNTIME_IMAGE with the project's Dockerfiles"
  docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f runtime/Dockerfile ${TORCH_INDEX_URL:+--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL"} \
    -t "$RUNTIME_IMAGE" .
}

up() {
  mkdir -p "$(dirname "$KUBECONFIG_FILE")"
  if ! kind get clusters | grep -qx "$CLUSTER"; then
    cluster_config | kind create cluster --name "$CLUSTER" --config - --wait 120s
  fi
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
  advertise_gpus
  build_images
  kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$RUNTIME_IMAGE"
}

run_tests() {
  # The e2e fixtures install the chart with Helm from charts/kubetrain and apply crds/.
  KUBETRAIN_TEST_KUBECONFIG=$KUBECONFIG_FILE \
    KUBETRAIN_E2E_OPERATOR_IMAGE=$OPERATOR_IMAGE \
    KUBETRAIN_E2E_RUNTIME_IMAGE=$RUNTIME_IMAGE \
    KUBETRAIN_SKIP_TOOLS=1 \
    ./scripts/test.sh -m e2e "$@"
}

case "${1:-all}" in
  up) up ;;
  test) shift; run_tests "$@" ;;
  down) kind delete cluster --name "$CLUSTER" ;;
  all) up; run_tests ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
