#!/usr/bin/env bash
# Local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler) with
# kwok-simulated CPU/A100/H100 node pools, for kubetrain's cluster tests; `--node` adds a real
# worker node (kubelet, kube-proxy, containerd, CoreDNS) that runs pods (needs root).
#   e2e/local-cluster.sh up [--node] [--build] [--audit] [--apiserver-port N] [--state-dir DIR]
#   e2e/local-cluster.sh env | status | down
#   e2e/local-cluster.sh import IMAGE.tar     # into the real node's containerd
# `eval "$(e2e/local-cluster.sh up)"` starts it and points kubectl at it.
# The logic lives in localcluster.py (standard library only, so no virtualenv is needed).
set -euo pipefail
exec python3 "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/localcluster.py" "$@"
