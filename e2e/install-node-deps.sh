#!/usr/bin/env bash
# Install what the real worker node of the local cluster (`e2e/local-cluster.sh up --node`)
# needs from Debian's packages: containerd, runc, the CNI plugins, iptables, and busybox-static
# (the pause and test images are built from its binary). Idempotent: apt-get runs only when
# something is missing. Another process may hold the dpkg lock, hence the lock timeout.
set -euo pipefail

log() { printf '[install-node-deps] %s\n' "$*" >&2; }

# binary -> Debian package
declare -A PKG=(
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [iptables]=iptables
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/lib/cni/host-local]=containernetworking-plugins
  [/usr/lib/cni/portmap]=containernetworking-plugins
  [/usr/lib/cni/firewall]=containernetworking-plugins
  [/bin/busybox]=busybox-static
  [ip]=iproute2
  [openssl]=openssl
)

have() { if [[ $1 == /* ]]; then [[ -x $1 ]]; else command -v "$1" >/dev/null; fi; }

# busybox-static is wanted specifically (the images need a static binary), not any busybox.
static_busybox() { [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; }

missing=()
for bin in "${!PKG[@]}"; do
  if [[ $bin == /bin/busybox ]]; then static_busybox && continue; else have "$bin" && continue; fi
  missing+=("${PKG[$bin]}")
done
if ((${#missing[@]} == 0)); then exit 0; fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [[ $(id -u) != 0 ]]; then
  log "ERROR: missing ${missing[*]}; run this as root (apt-get install ${missing[*]})"
  exit 1
fi
log "installing ${missing[*]} with apt-get (once per machine) ..."
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >&2
# The Debian package enables and starts a system containerd where an init system runs; ours is
# a separate instance with its own socket, so that one is neither needed nor touched.
log "done"
