#!/usr/bin/env bash
# Build the GitOps health checker (e2e/tools/healthcheck: Argo CD's Lua interpreter and kstatus)
# once per version of its sources, into
#   ${KUBETRAIN_CACHE:-$HOME/.cache/kubetrain}/bin/healthcheck-<hash of go.mod, go.sum, main.go>/
# and print the binary's path as the last line of stdout.
#
# Separate from build-tools.sh on purpose: that script's version key covers the cluster tools
# only, and a change here must not rebuild Kubernetes. The Lua script it runs is not part of
# the binary (it is given with -script), so editing the health check needs no rebuild.
#
# Usage: e2e/build-healthcheck.sh [--check]   (--check: print the path if built, else exit 1)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools/healthcheck"
CACHE="${KUBETRAIN_CACHE:-$HOME/.cache/kubetrain}"
log() { printf '[build-healthcheck] %s\n' "$*" >&2; }

key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
BIN="$CACHE/bin/healthcheck-$key/healthcheck"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
if [[ "${1:-}" == --check ]]; then log "not built yet: $BIN"; exit 1; fi

command -v go >/dev/null || { log "ERROR: 'go' is not on PATH (Go >= $(awk '$1=="go"{print $2}' "$SRC/go.mod") needed)"; exit 1; }
mkdir -p "$(dirname "$BIN")"
# The same Go caches as build-tools.sh: the k8s.io modules it pinned are there already.
export GOCACHE="$CACHE/go/build" GOMODCACHE="$CACHE/go/mod"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath" GOWORK=off

log "building $BIN ..."
start=$SECONDS
tmp="$(mktemp "$BIN.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$SRC" && go build -ldflags "-s -w" -o "$tmp" .)
mv -f "$tmp" "$BIN"  # in place only once complete: a killed build leaves no half binary
log "built in $((SECONDS - start)) s"
echo "$BIN"
