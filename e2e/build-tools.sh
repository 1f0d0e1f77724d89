#!/usr/bin/env bash
# Build the pinned test-cluster binaries (Kubernetes control plane, etcd, kwok; the real node's
# kubelet, kube-proxy and CoreDNS, helm, the versitygw S3 server and kind on request) from the
# Go modules under
# e2e/tools/, once per pin set, into
#   ${KUBETRAIN_CACHE:-$HOME/.cache/kubetrain}/bin/<version-key>/
# and print that directory as the last line of stdout.
#
# Why from source: no container registry or release downloads are reachable on the CI machines,
# but the Go module proxy is. Reruns are cheap: a complete bin dir is reused as it is, and the
# Go build and module caches live under the same cache dir.
#
# Usage: e2e/build-tools.sh [core|node|all|TOOL...] [--dir] [--check]
#   core (default)  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok
#   node            kubelet, kube-proxy, coredns (for `local-cluster.sh up --node`)
#   all             core + node + helm + versitygw + kind
#   TOOL            one of: kubernetes kubernetes-node coredns etcd kwok helm versitygw kind
#   --dir           print the bin dir and exit without building
#   --check         exit 1 (listing what is missing on stderr) unless the requested binaries exist
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$E2E_DIR/tools"
CACHE="${KUBETRAIN_CACHE:-$HOME/.cache/kubetrain}"
# Bump when the build recipe below changes in a way that changes the binaries.
RECIPE=3

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Version read from a tool module's go.mod `require` line.
pinned() { awk -v m="$2" '$1==m || ($1=="require" && $2==m) {print ($1=="require") ? $3 : $2; exit}' "$TOOLS_DIR/$1/go.mod"; }

K8S_VERSION="$(pinned kubernetes k8s.io/kubernetes)"
[[ -n "$K8S_VERSION" ]] || die "cannot read the k8s.io/kubernetes version from $TOOLS_DIR/kubernetes/go.mod"

version_key() {
  local h
  h="$( { echo "recipe=$RECIPE"; cat "$TOOLS_DIR/go.work" "$TOOLS_DIR/go.work.sum"
          for t in kubernetes coredns etcd kwok helm versitygw kind; do
            cat "$TOOLS_DIR/$t/go.mod" "$TOOLS_DIR/$t/go.sum"; done; } | sha256sum | cut -c1-12)"
  echo "k8s-${K8S_VERSION}-${h}"
}
BIN_DIR="$CACHE/bin/$(version_key)"

binaries_of() {
  case "$1" in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubectl ;;
    kubernetes-node) echo kubelet kube-proxy ;;
    coredns | etcd | kwok | helm | versitygw | kind) echo "$1" ;;
    *) die "unknown tool '$1' (known: kubernetes kubernetes-node coredns etcd kwok helm versitygw kind)" ;;
  esac
}

tools=() mode=build
for arg in "$@"; do
  case "$arg" in
    core | "") tools+=(kubernetes etcd kwok) ;;
    node) tools+=(kubernetes-node coredns) ;;
    all) tools+=(kubernetes etcd kwok kubernetes-node coredns helm versitygw kind) ;;
    --dir) mode=dir ;;
    --check) mode=check ;;
    -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) binaries_of "$arg" >/dev/null; tools+=("$arg") ;;
  esac
done
((${#tools[@]})) || tools=(kubernetes etcd kwok)

if [[ $mode == dir ]]; then echo "$BIN_DIR"; exit 0; fi

missing_tools() {
  local t b
  for t in "${tools[@]}"; do
    for b in $(binaries_of "$t"); do
      if [[ ! -x "$BIN_DIR/$b" ]]; then echo "$t"; break; fi
    done
  done | awk '!seen[$0]++'
}

if [[ $mode == check ]]; then
  todo="$(missing_tools)"
  if [[ -n "$todo" ]]; then log "missing in $BIN_DIR: $(echo $todo) (run e2e/build-tools.sh)"; exit 1; fi
  echo "$BIN_DIR"; exit 0
fi

command -v go >/dev/null || die "'go' is not on PATH; install Go >= $(awk '$1=="go"{print $2}' "$TOOLS_DIR/kubernetes/go.mod")"
mkdir -p "$BIN_DIR"

# One builder at a time per cache (parallel pytest sessions may all call this script).
exec 9>"$CACHE/bin/.build.lock"
flock 9

export GOCACHE="$CACHE/go/build" GOMODCACHE="$CACHE/go/mod"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

# Kubernetes, kwok and helm build from one workspace (tools/go.work: one build list, so their
# shared libraries compile once); the others from their own modules alone.
workspace_of() {
  case "$1" in
    kubernetes | kubernetes-node | kwok | helm) echo "$TOOLS_DIR/go.work" ;;
    *) echo off ;;
  esac
}

build_tool() {
  local t=$1 tmp ldflags pkgs=() vk major minor
  tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
  GOWORK="$(workspace_of "$t")"
  export GOWORK
  case "$t" in
    kubernetes | kubernetes-node)
      major="${K8S_VERSION#v}"; major="${major%%.*}"
      minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
      ldflags="-s -w"
      for vk in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $vk.gitVersion=$K8S_VERSION -X $vk.gitMajor=$major -X $vk.gitMinor=$minor"
        ldflags+=" -X $vk.gitTreeState=clean -X $vk.gitCommit="
      done
      for b in $(binaries_of "$t"); do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
      (cd "$TOOLS_DIR/kubernetes" && go build -tags providerless -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
      ;;
    coredns)
      # A custom main (e2e/tools/coredns/main.go) that links only the plugins the Corefile uses.
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w" -o "$tmp/coredns" .) ;;
    etcd)
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3) ;;
    kwok)
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$(pinned kwok sigs.k8s.io/kwok | sed 's/^v//')" \
        -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok) ;;
    helm)
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(pinned helm helm.sh/helm/v3)" \
        -o "$tmp/helm" helm.sh/helm/v3/cmd/helm) ;;
    versitygw)
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w" -o "$tmp/versitygw" github.com/versity/versitygw/cmd/versitygw) ;;
    kind)
      (cd "$TOOLS_DIR/$t" && go build -ldflags "-s -w" -o "$tmp/kind" sigs.k8s.io/kind) ;;
  esac
  # Rename into place only after the whole tool built, so a killed build never leaves a half binary.
  for b in $(binaries_of "$t"); do mv -f "$tmp/$b" "$BIN_DIR/$b"; done
  rmdir "$tmp"
}

todo="$(missing_tools)"
if [[ -n "$todo" ]]; then
  start=$SECONDS
  for t in $todo; do
    log "building $t into $BIN_DIR ..."
    t0=$SECONDS
    build_tool "$t" || die "building $t failed (see the go output above)"
    log "built $t in $((SECONDS - t0)) s"
  done
  log "done in $((SECONDS - start)) s"
fi
echo "$BIN_DIR"
