#!/usr/bin/env python3
"""A real Kubernetes control plane on 127.0.0.1, with kwok-simulated CPU and GPU node pools.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as plain processes
(no Docker, no kubelet), so the cluster tests exercise the real API server (OpenAPI + CEL
validation, RBAC, admission), the real scheduler (taints, extended resources) and the real
garbage collector on a 2-core CI machine. kwok keeps the fake nodes Ready and marks their pods
Running, and it deletes pods once they are marked for deletion, as a kubelet would.

With ``node=True`` (``up --node``) it adds one real worker, ``kt-node-0``: containerd, kubelet,
kube-proxy and CoreDNS on the host, for tests whose pods must really run (see ``RealNode``).

Standard library only: this runs before the project's virtualenv exists.

CLI: ``python3 e2e/localcluster.py up|down|env|status|import`` (see ``--help``); library use:
``LocalCluster(state_dir, node=True).up(build=True)`` / ``.import_image(tar)`` / ``.down()``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "e2e" / "build-tools.sh"
DEFAULT_CRDS = REPO_ROOT / "crds"
CACHE_DIR = Path(os.environ.get("KUBETRAIN_CACHE") or Path.home() / ".cache" / "kubetrain")


def default_state_dir() -> Path:
    """State dir: ``$KUBETRAIN_CLUSTER_DIR`` or ``<cache>/cluster``."""
    return Path(os.environ.get("KUBETRAIN_CLUSTER_DIR") or CACHE_DIR / "cluster")


SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first IP of SERVICE_CIDR: the `kubernetes` Service, so it must be a SAN
POD_CIDR = "10.64.0.0/12"  # kwok's pod IP pool; kwok's default /24 runs out at 254 pods
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME = "kubetrain-local"

# Start order; `down` stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BINARIES = (*COMPONENTS, "kubectl")

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "kubetrain.io/pool"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclasses.dataclass(frozen=True)
class NodePool:
    """A simulated node pool: `count` identical kwok nodes labelled ``kubetrain.io/pool=<name>``."""

    name: str
    count: int
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str | None = None
    pods: int = 110

    def node_names(self) -> list[str]:
        return [f"kt-{self.name}-{i}" for i in range(self.count)]


NODE_POOLS = (
    NodePool("cpu", 2, cpu="8", memory="32Gi"),
    NodePool("a100", 2, cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-A100-SXM4-80GB"),
    NodePool("h100", 2, cpu="64", memory="512Gi", gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3"),
)


class ClusterError(RuntimeError):
    """Startup or teardown failed; the message says which component and why."""


@dataclasses.dataclass
class ClusterInfo:
    """What a client needs to reach the running cluster."""

    state_dir: Path
    kubeconfig: Path
    server: str
    bin_dir: Path
    audit_log: Path | None
    started: bool = False  # False when `up` found this cluster already running

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"


def log(msg: str) -> None:
    print(f"[local-cluster] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None when the pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _starttime(pid: int) -> int | None:
    """Boot-relative start time: with the pid, it identifies a process despite pid reuse."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (components may have forked helpers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _parent_death_signal() -> None:
    """preexec_fn: kill the child when its parent dies (a killed pytest leaves no orphans).

    SIGKILL, not SIGTERM: all components get it at once, and an API server that loses etcd
    in the middle of its graceful shutdown can hang there indefinitely.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _free_port(taken: set[int]) -> int:
    """A currently free loopback port, distinct from the ones already handed out."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise ClusterError(
                f"port {port} on 127.0.0.1 is already in use ({e.strerror}); free it, or choose "
                "another with --apiserver-port / KUBETRAIN_APISERVER_PORT (unset: a free port)"
            ) from None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log file)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (log is empty)"


# ----------------------------------------------------------------------------- PKI

_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = @sans
[sans]
DNS.1 = localhost
DNS.2 = kubernetes
DNS.3 = kubernetes.default
DNS.4 = kubernetes.default.svc
DNS.5 = kubernetes.default.svc.cluster.local
IP.1 = 127.0.0.1
IP.2 = {service_ip}
"""

# name -> (CA, subject, extension section). O=system:masters makes admin and kwok superusers;
# the controller-manager and scheduler get their RBAC-bootstrapped identities.
_LEAF_CERTS = {
    "apiserver": ("ca", "/CN=kube-apiserver", "server"),
    "admin": ("ca", "/O=system:masters/CN=kubetrain-admin", "client"),
    "controller-manager": ("ca", "/CN=system:kube-controller-manager", "client"),
    "scheduler": ("ca", "/CN=system:kube-scheduler", "client"),
    "kwok": ("ca", "/O=system:masters/CN=kubetrain-kwok", "client"),
    "front-proxy-client": ("front-proxy-ca", "/CN=front-proxy-client", "client"),
}


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def ensure_pki(pki: Path) -> None:
    """Create the cluster CA, front-proxy CA, leaf certs and SA signing key once per state dir."""
    needed = ["ca.crt", "front-proxy-ca.crt", "sa.key", "sa.pub"] + [
        f"{n}.crt" for n in _LEAF_CERTS
    ]
    if all((pki / n).exists() for n in needed):
        return
    if shutil.which("openssl") is None:
        raise ClusterError(
            "the `openssl` command is needed for the cluster certificates (apt-get install openssl)"
        )
    if pki.exists():
        shutil.rmtree(pki)
    pki.mkdir(parents=True, mode=0o700)
    cnf = pki / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF.replace("{service_ip}", SERVICE_IP))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "front-proxy-ca"):
        _openssl(
            "req",
            "-x509",
            "-new",
            "-config",
            cnf,
            "-extensions",
            "ca",
            *ec,
            "-days",
            "3650",
            "-keyout",
            pki / f"{ca}.key",
            "-out",
            pki / f"{ca}.crt",
            "-subj",
            f"/CN=kubetrain-local-{ca}",
        )
    for name, (ca, subject, ext) in _LEAF_CERTS.items():
        _issue_leaf(pki, cnf, name, ca=ca, subject=subject, ext=ext)
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pki / "sa.key"
    )
    _openssl("pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def _issue_leaf(pki: Path, cnf: Path, name: str, *, ca: str, subject: str, ext: str) -> None:
    """A fresh EC key and a cert for it, signed by `ca`, with the extension section `ext`."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    csr = pki / f"{name}.csr"
    _openssl(
        "req",
        "-new",
        "-config",
        cnf,
        *ec,
        "-keyout",
        pki / f"{name}.key",
        "-out",
        csr,
        "-subj",
        subject,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        pki / f"{ca}.crt",
        "-CAkey",
        pki / f"{ca}.key",
        "-set_serial",
        "0x" + secrets.token_hex(16),
        "-days",
        "3650",
        "-extfile",
        cnf,
        "-extensions",
        ext,
        "-out",
        pki / f"{name}.crt",
    )
    csr.unlink()


def ensure_node_pki(pki: Path, ip: str) -> None:
    """The real node's certs (kubelet, kube-proxy, CoreDNS, the API server's kubelet client),
    and an API server cert that also names `ip`: pods reach it there, through the
    `kubernetes` Service. Only what is missing or stale is (re)issued."""
    cnf = pki / "openssl-node.cnf"
    cnf.write_text(
        _OPENSSL_CNF.replace("{service_ip}", SERVICE_IP).rstrip("\n") + f"\nIP.3 = {ip}\n"
    )
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(pki / "apiserver.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if f"IP Address:{ip}" not in {x.strip() for x in sans.replace("\n", ",").split(",")}:
        ca, subject, ext = _LEAF_CERTS["apiserver"]
        _issue_leaf(pki, cnf, "apiserver", ca=ca, subject=subject, ext=ext)
    for name, (ca, subject, ext) in _NODE_LEAF_CERTS.items():
        if not (pki / f"{name}.crt").exists():
            _issue_leaf(pki, cnf, name, ca=ca, subject=subject, ext=ext)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    """A self-contained kubeconfig (certs embedded) so it can be copied or mounted anywhere."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER_NAME}
  cluster:
    server: {server}
    certificate-authority-data: {_b64(pki / "ca.crt")}
users:
- name: {user}
  user:
    client-certificate-data: {_b64(pki / f"{user}.crt")}
    client-key-data: {_b64(pki / f"{user}.key")}
contexts:
- name: {CLUSTER_NAME}
  context:
    cluster: {CLUSTER_NAME}
    user: {user}
current-context: {CLUSTER_NAME}
"""
    )
    path.chmod(0o600)


# ----------------------------------------------------------------------------- kwok stages

# kwok only simulates what its Stage objects describe. These are the kubelet-like basics:
# nodes become Ready (keeping the capacity we registered), pods get Running with an IP, Job
# pods succeed, and pods marked for deletion are removed (what a kubelet's final delete does).
_KWOK_STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetrain-node-ready
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - jq:
        key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: NotIn
        values: ["True"]
  steps:
  - patch:
      subresource: status
      root: status
      template: |
        {{ $now := Now }}
        conditions:
        {{ range NodeConditions }}
        - type: {{ .type | Quote }}
          status: {{ .status | Quote }}
          reason: {{ .reason | Quote }}
          message: {{ .message | Quote }}
          lastHeartbeatTime: {{ $now | Quote }}
          lastTransitionTime: {{ $now | Quote }}
        {{ end }}
        addresses:
        {{ with NodeIP }}
        - {type: InternalIP, address: {{ . | Quote }}}
        {{ end }}
        {{ with NodeName }}
        - {type: Hostname, address: {{ . | Quote }}}
        {{ end }}
        allocatable:
        {{ YAML .status.allocatable 1 }}
        capacity:
        {{ YAML .status.capacity 1 }}
        nodeInfo:
          architecture: amd64
          operatingSystem: linux
          kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
          kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
          containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
          kernelVersion: {{ printf "kwok-%s" Version | Quote }}
          osImage: kwok
          machineID: ""
          systemUUID: ""
          bootID: ""
        phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetrain-node-heartbeat
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - jq:
        key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: In
        values: ["True"]
  delay:
    durationMilliseconds: 300000
    jitterDurationMilliseconds: 330000
  steps:
  - patch:
      subresource: status
      root: status
      template: |
        {{ $now := Now }}
        conditions:
        {{ range NodeConditions }}
        - type: {{ .type | Quote }}
          status: {{ .status | Quote }}
          reason: {{ .reason | Quote }}
          message: {{ .message | Quote }}
          lastHeartbeatTime: {{ $now | Quote }}
          lastTransitionTime: {{ $now | Quote }}
        {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetrain-pod-running
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - jq: {key: .metadata.deletionTimestamp, operator: DoesNotExist}
    - jq: {key: .status.phase, operator: In, values: [Pending]}
    - jq:
        key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: NotIn
        values: ["True"]
  steps:
  - patch:
      subresource: status
      root: status
      template: |
        {{ $now := Now }}
        conditions:
        - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
        - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
        - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
        {{ range .spec.readinessGates }}
        - type: {{ .conditionType | Quote }}
          status: "True"
          lastTransitionTime: {{ $now | Quote }}
        {{ end }}
        containerStatuses:
        {{ range .spec.containers }}
        - name: {{ .name | Quote }}
          image: {{ .image | Quote }}
          ready: true
          started: true
          restartCount: 0
          state: {running: {startedAt: {{ $now | Quote }}}}
        {{ end }}
        initContainerStatuses:
        {{ range .spec.initContainers }}
        - name: {{ .name | Quote }}
          image: {{ .image | Quote }}
          ready: true
          restartCount: 0
          state:
            terminated:
              exitCode: 0
              reason: Completed
              startedAt: {{ $now | Quote }}
              finishedAt: {{ $now | Quote }}
        {{ end }}
        {{ with NodeIPsWith .spec.nodeName }}
        hostIP: {{ index . 0 | Quote }}
        hostIPs:
        {{ range . }}
        - ip: {{ . | Quote }}
        {{ end }}
        {{ end }}
        {{ $hostNet := or .spec.hostNetwork false }}
        {{ $uid := or .metadata.uid "" }}
        {{ $name := or .metadata.name "" }}
        {{ $ns := or .metadata.namespace "" }}
        {{ with PodIPsWith .spec.nodeName $hostNet $uid $name $ns }}
        podIP: {{ index . 0 | Quote }}
        podIPs:
        {{ range . }}
        - ip: {{ . | Quote }}
        {{ end }}
        {{ end }}
        phase: Running
        startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetrain-job-pod-succeeded
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - jq: {key: .metadata.deletionTimestamp, operator: DoesNotExist}
    - jq: {key: .status.phase, operator: In, values: [Running]}
    - jq: {key: '.metadata.ownerReferences.[].kind', operator: In, values: [Job]}
  steps:
  - patch:
      subresource: status
      root: status
      template: |
        {{ $now := Now }}
        containerStatuses:
        {{ range .spec.containers }}
        - name: {{ .name | Quote }}
          image: {{ .image | Quote }}
          ready: false
          started: false
          restartCount: 0
          state:
            terminated:
              exitCode: 0
              reason: Completed
              startedAt: {{ $now | Quote }}
              finishedAt: {{ $now | Quote }}
        {{ end }}
        phase: Succeeded
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: kubetrain-pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - jq: {key: .metadata.deletionTimestamp, operator: Exists}
  steps:
  - delete: true
"""

_AUDIT_POLICY = """\
# Metadata for every request (who, verb, resource, status) without bodies, once per request.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""

_SCHEDULER_CONFIG = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
"""


def node_manifest(pool: NodePool, name: str) -> dict[str, Any]:
    """A kwok-managed Node with real capacity, so the scheduler does real fit checks."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    resources = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "pods": str(pool.pods),
        "ephemeral-storage": "500Gi",
    }
    taints = []
    if pool.gpus:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": pool.gpu_product or "NVIDIA-GPU",
                "nvidia.com/gpu.count": str(pool.gpus),
            }
        )
        resources[GPU_RESOURCE] = str(pool.gpus)
        taints.append(dict(GPU_TAINT))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": resources, "allocatable": resources},
    }


# ----------------------------------------------------------------------------- the real node
#
# `up --node` adds one real worker (kubelet + kube-proxy + containerd + CoreDNS on the host)
# beside the kwok pools, for tests that need pods to really run. The facts behind each choice
# (cgroup v1, no CAP_SYS_RESOURCE, what the kubelet changes on the host) are measured ones,
# listed in the project's machine notes.

REAL_NODE = "kt-node-0"
REAL_POOL = "real"
REAL_NODE_LABEL = "kubetrain.io/real-node"
# Only pods that tolerate it run for real: the rest keep landing on the kwok pools, as before.
REAL_NODE_TAINT = {"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
REAL_POD_CIDR = "10.244.0.0/24"  # disjoint from kwok's POD_CIDR and from SERVICE_CIDR
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "kubetrain-node"  # CNI puts it in the comments of its iptables rules
CNI_BRIDGE = "kt-cni0"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall")
SYSTEM_CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
PAUSE_IMAGE = "localhost/kubetrain/pause:e2e"
BUSYBOX_IMAGE = "localhost/kubetrain/busybox:e2e"
CONTAINERD_ROOT = CACHE_DIR / "containerd"  # image store: survives `down`, `up` and reruns
IMAGES_DIR = CACHE_DIR / "images"
INSTALL_SCRIPT = REPO_ROOT / "e2e" / "install-node-deps.sh"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")
# Host dirs the node's components create when missing; `down` removes them if still empty.
HOST_DIRS = ("/run/netns", "/var/lib/cni", "/var/log/containers", "/var/lib/kubelet")
SHIM_SOCKET_DIR = "/run/containerd/s"  # containerd 1.6 shims' sockets, whatever the state dir
CNI_CACHE_DIR = "/var/lib/cni"  # libcni's result cache (not configurable in containerd 1.6)
# The kubelet's device-plugin socket ignores --root-dir.
KUBELET_FIXED_FILES = ("/var/lib/kubelet/device-plugins/kubelet.sock",)

# Host settings the kubelet (vm.*, kernel.*), CNI (ip_forward) and kube-proxy (route_localnet,
# conntrack) may rewrite; saved before the node starts and restored by `down`.
NODE_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
# iptables chains: KUBE-* are the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY and
# KUBE-IPTABLES-HINT survive `kube-proxy --cleanup`) and kube-proxy's; `down` removes them all
# (one real node per machine). CNI-* are the CNI plugins', removed when created since `up`.
KUBE_CHAIN_PREFIX = "KUBE-"
CNI_CHAIN_PREFIX = "CNI-"

_NODE_LEAF_CERTS = {
    "kubelet": ("ca", f"/O=system:nodes/CN=system:node:{REAL_NODE}", "client"),
    "kube-proxy": ("ca", "/CN=system:kube-proxy", "client"),
    "apiserver-kubelet-client": (
        "ca",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "client",
    ),
    "coredns": ("ca", "/CN=system:coredns", "client"),
}


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: tuple[str, ...] = NODE_SYSCTLS) -> dict[str, str]:
    """Current values of the sysctls that exist on this kernel (others are skipped)."""
    out = {}
    for name in names:
        with contextlib.suppress(OSError):
            out[name] = _sysctl_path(name).read_text().strip()
    return out


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back the values that changed; return 'name: now -> saved' for each."""
    changed = []
    for name, value in saved.items():
        path = _sysctl_path(name)
        try:
            now = path.read_text().strip()
            if now != value:
                path.write_text(value + "\n")
                changed.append(f"{name}: {now} -> {value}")
        except OSError as e:
            log(f"cannot restore {name}={value}: {e}")
    return changed


def node_ip() -> str:
    """The address of the default-route interface ($KUBETRAIN_NODE_IP overrides): the kubelet
    refuses loopback, and pods reach the API server and CoreDNS there."""
    if os.environ.get("KUBETRAIN_NODE_IP"):
        return os.environ["KUBETRAIN_NODE_IP"]
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"]) or "[]")
    devs = [r["dev"] for r in routes if r.get("dev")] or ["eth0"]
    addrs = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", devs[0]]) or "[]")
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("scope") == "global":
                return str(a["local"])
    raise ClusterError(f"no IPv4 address on {devs[0]}; set KUBETRAIN_NODE_IP")


def _run(argv: list[str], *, check: bool = True, timeout: float = 60, **kw: Any) -> str:
    """Run a short host command and return its stdout; ClusterError with stderr on failure."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, **kw
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise ClusterError(f"{argv[0]} failed: {e}") from None
        return ""
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def cni_conflist(ipam_dir: Path) -> dict[str, Any]:
    """bridge + host-local + portmap + firewall: firewall matters where a FORWARD DROP policy
    (Docker's) would otherwise drop pod traffic."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": REAL_POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    }


def containerd_config(
    *, root: Path, state: Path, socket_path: Path, cni_conf: Path, cni_bin: Path, snapshotter: str
) -> str:
    """containerd 1.6 config (version 2) for a private instance beside any system one.

    restrict_oom_score_adj is mandatory here: the kubelet asks for a negative oom_score_adj,
    this VM lacks CAP_SYS_RESOURCE, and every sandbox would fail with "can't get final
    child's PID from pipe: EOF". The opt plugin is disabled so nothing lands in /opt.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket_path}"

[ttrpc]
  address = "{socket_path}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "{snapshotter}"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{state}/runc"

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"""


def kubelet_config(
    *,
    socket_path: Path,
    ca: Path,
    ip: str,
    port: int,
    healthz_port: int,
    pod_logs: Path,
    max_pods: int = 40,
) -> dict[str, Any]:
    """KubeletConfiguration: cgroup v1 allowed, cgroupfs (PID 1 is not systemd), webhook
    authn/authz with anonymous off, and eviction/image GC thresholds low enough that a
    fairly full disk neither taints the node nor deletes imported images."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{socket_path}",
        "address": ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "maxPods": max_pods,
        "systemReserved": {"cpu": "100m", "memory": "256Mi"},
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "nodeStatusReportFrequency": "10s",
        "podLogsDir": str(pod_logs),  # not /var/log/pods
    }


def kube_proxy_config(*, kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """iptables mode; conntrack settings left alone (0 = do not touch the host's sysctls)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": REAL_POD_CIDR,
        "hostnameOverride": REAL_NODE,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"minSyncPeriod": "1s", "syncPeriod": "30s"},
    }


def corefile(*, ip: str, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """Cluster DNS only: names outside the cluster zones are refused, nothing is forwarded."""
    return f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {ip}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {CLUSTER_NAME}
        pods insecure
    }}
    cache 30
    loadbalance
}}
"""


def dns_objects(ip: str) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object): RBAC for CoreDNS and a selector-less `kube-dns` Service whose
    EndpointSlice points at CoreDNS on the host."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "system:coredns"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "system:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:coredns",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:coredns",
                    }
                ],
            },
        ),
        (
            "/api/v1/namespaces/kube-system/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                },
                "spec": {
                    "clusterIP": DNS_SERVICE_IP,
                    "ports": [
                        {"name": n, "protocol": p, "port": 53, "targetPort": 53} for n, p in ports
                    ],
                },
            },
        ),
        (
            "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-host",
                    "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "local-cluster.kubetrain.io",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": [ip], "conditions": {"ready": True}, "nodeName": REAL_NODE}
                ],
                "ports": [{"name": n, "protocol": p, "port": 53} for n, p in ports],
            },
        ),
    ]


# -- host cleanup helpers (pure parts are unit-tested)


def iptables_chains(save: str) -> dict[str, list[str]]:
    """The KUBE-* and CNI-* chains per table in `iptables-save` output (saved before `up`)."""
    prefixes = (KUBE_CHAIN_PREFIX, CNI_CHAIN_PREFIX)
    return {
        table: sorted(c for c in chains if c.startswith(prefixes))
        for table, chains, _rules in _parse_iptables_save(save)
    }


def iptables_cleanup_plan(
    save: str, pod_cidr_prefix: str, before: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """From `iptables-save` output, the tables to rewrite (table -> restore lines) without
    every KUBE-* chain (one kubelet per machine), every rule for our pod network, the CNI-*
    chains that did not exist `before` (all CNI chains count as pre-existing when unknown),
    CNI chains our removals emptied, and every jump to a removed chain.

    Rules of other users (Docker, another CNI network) are kept as they are.
    """
    plans: dict[str, list[str]] = {}
    for table, chains, rules in _parse_iptables_save(save):
        known = set(chains) if before is None else set(before.get(table, []))

        def ours(rule: str) -> bool:
            target = _jump_target(rule) or ""
            return (
                rule.split()[1].startswith(KUBE_CHAIN_PREFIX)
                or target.startswith(KUBE_CHAIN_PREFIX)
                or pod_cidr_prefix in rule
                or f'\\"{CNI_NETWORK}\\"' in rule
                or f'"{CNI_NETWORK}"' in rule
                or CNI_BRIDGE in rule
            )

        dropped = {
            c
            for c in chains
            if c.startswith(KUBE_CHAIN_PREFIX)
            or (c.startswith(CNI_CHAIN_PREFIX) and c not in known)
        }
        had = {r.split()[1] for r in rules}
        kept = [r for r in rules if not ours(r)]
        while True:
            kept = [
                r for r in kept if r.split()[1] not in dropped and _jump_target(r) not in dropped
            ]
            used = {r.split()[1] for r in kept}
            emptied = {
                c
                for c in chains
                if c.startswith(CNI_CHAIN_PREFIX)
                and c in had
                and c not in used
                and c not in dropped
            }
            if not emptied:
                break
            dropped |= emptied
        if len(kept) == len(rules) and not dropped:
            continue
        lines = [f"*{table}"]
        lines += [line for c, line in chains.items() if c not in dropped]
        lines += [*kept, "COMMIT"]
        plans[table] = lines
    return plans


def _jump_target(rule: str) -> str | None:
    parts = rule.split()
    for flag in ("-j", "-g", "--jump", "--goto"):
        if flag in parts[:-1]:
            return parts[parts.index(flag) + 1]
    return None


def _parse_iptables_save(save: str) -> Iterator[tuple[str, dict[str, str], list[str]]]:
    """(table, {chain: ':chain POLICY [..]' line}, ['-A ...' rules]) per table."""
    table, chains, rules = "", {}, []
    for line in save.splitlines():
        if line.startswith("*"):
            table, chains, rules = line[1:].strip(), {}, []
        elif line.startswith(":"):
            chains[line[1:].split()[0]] = line
        elif line.startswith("-A "):
            rules.append(line)
        elif line.strip() == "COMMIT" and table:
            yield table, chains, rules
            table = ""


def _mounts_under(prefixes: list[str]) -> list[str]:
    """Mount points at or below any of `prefixes`, deepest first (unmount order)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _bridge_netns(bridge: str = CNI_BRIDGE) -> list[str]:
    """Named netns (/run/netns/...) holding the far end of a veth on our bridge: the pod
    sandboxes' network namespaces, found without containerd."""
    links = json.loads(_run(["ip", "-j", "link", "show", "master", bridge], check=False) or "[]")
    ids = {link["link_netnsid"] for link in links if "link_netnsid" in link}
    if not ids:
        return []
    named = json.loads(_run(["ip", "-j", "netns", "list"], check=False) or "[]")
    return [f"/run/netns/{n['name']}" for n in named if n.get("id") in ids]


def _cgroup_dirs(name: str = "kubepods") -> list[Path]:
    """Every cgroup dir named `name` at the top of each v1 hierarchy (and the v2 one)."""
    root = Path("/sys/fs/cgroup")
    found = [root / name] if (root / name).is_dir() else []
    with contextlib.suppress(OSError):
        found += [h / name for h in root.iterdir() if (h / name).is_dir()]
    return found


def _cgroup_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for dirpath, _dirs, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return pids


def _rmdir_tree(top: Path) -> None:
    """rmdir a cgroup tree bottom-up (cgroup dirs cannot be removed with their files)."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: e[0].count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _load_oci() -> Any:
    """e2e/oci.py (the project's OCI archive writer), imported from beside this file."""
    import importlib.util

    name = "kubetrain_e2e_oci"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("oci.py"))
    if spec is None or spec.loader is None:
        raise ClusterError("e2e/oci.py is missing; it packs the pause and test images")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def busybox_rootfs(root: Path, busybox: Path = Path("/bin/busybox")) -> None:
    """A rootfs of Debian's static busybox with every applet linked, and users root/nobody."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = _run([str(busybox), "--list"]).split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            os.symlink("busybox", root / "bin" / applet)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (root / d).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")


# The pause container only has to wait for a signal; a shell trap makes PID 1 exit on TERM.
PAUSE_ENTRYPOINT = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"]


def build_node_images(out_dir: Path = IMAGES_DIR) -> dict[str, Path]:
    """The pause and busybox image archives (built once per machine; no registry needed)."""
    oci = _load_oci()
    targets = {PAUSE_IMAGE: out_dir / "pause-e2e.tar", BUSYBOX_IMAGE: out_dir / "busybox-e2e.tar"}
    if all(p.exists() for p in targets.values()):
        return targets
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build.", dir=out_dir))
    try:
        busybox_rootfs(work / "rootfs")
        layer = oci.pack_layer(work / "rootfs", work / "layer.tar")
        oci.write_image(
            targets[PAUSE_IMAGE], PAUSE_IMAGE, [layer], oci.ImageConfig(entrypoint=PAUSE_ENTRYPOINT)
        )
        oci.write_image(targets[BUSYBOX_IMAGE], BUSYBOX_IMAGE, [layer], oci.ImageConfig(cmd=["sh"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return targets


class RealNode:
    """The real worker node of a LocalCluster: its files live in ``<state>/node``, its
    processes are recorded in ``cluster.json`` like the control plane's, and ``teardown``
    undoes every host change it made (processes, mounts, netns, bridge, iptables, cgroups,
    sysctls)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.dir = cluster.state_dir / "node"
        self.containerd_dir = self.dir / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.kubelet_root = self.dir / "kubelet"
        self.cni_conf = self.dir / "cni" / "net.d"
        self.cni_bin = self.dir / "cni" / "bin"
        self.ipam_dir = self.dir / "cni" / "ipam"
        # Outside self.dir, which teardown deletes: the host's values from before the first up.
        self.host_file = cluster.state_dir / "node-host.json"
        self.containerd_root = CONTAINERD_ROOT / "root"

    # -- host preparation

    @staticmethod
    def ensure_host_deps() -> None:
        """containerd, runc, CNI plugins, iptables, busybox-static from apt, when missing."""
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False)
        if proc.returncode != 0:
            raise ClusterError(f"{INSTALL_SCRIPT} failed (exit {proc.returncode}); see above")
        if os.geteuid() != 0:
            raise ClusterError("the real node (--node) needs root: kubelet, containerd, iptables")
        if not Path("/dev/kmsg").exists():  # seen vanish here while another job rebuilt /dev
            raise ClusterError("/dev/kmsg is missing; the kubelet cannot start without it")

    def other_node_running(self) -> bool:
        """One real node per machine: a containerd flocks its metadata db while it runs, so
        a lock held after ours stopped means another state dir's node is up."""
        db = self.containerd_root / "io.containerd.metadata.v1.bolt" / "meta.db"
        if not db.exists():
            return False
        with open(db, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def _check_no_other_node(self) -> None:
        if self.other_node_running():
            raise ClusterError(
                f"another containerd uses {self.containerd_root}: a real node from another "
                "state dir is running; `down` it first (one real node per machine)"
            )

    def _save_host(self) -> None:
        """Record sysctls and host paths before anything changes them (kept until teardown,
        so a second `up` after a crash does not save the kubelet's values as the originals)."""
        if self.host_file.exists():
            return
        host = {
            "sysctls": read_sysctls(),
            "existed": [p for p in HOST_DIRS if Path(p).exists()],
            "iptables": {
                cmd: iptables_chains(_run([f"{cmd}-save"], check=False))
                for cmd in ("iptables", "ip6tables")
                if shutil.which(f"{cmd}-save")
            },
        }
        self.host_file.write_text(json.dumps(host, indent=2))

    def _snapshotter(self) -> str:
        """overlayfs where the image store's filesystem supports it, else native (copies)."""
        probe = CONTAINERD_ROOT / ".overlay-probe"
        shutil.rmtree(probe, ignore_errors=True)
        for d in ("lower", "upper", "work", "merged"):
            (probe / d).mkdir(parents=True)
        opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        ok = (
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe / "merged")], check=False)
        shutil.rmtree(probe, ignore_errors=True)
        return "overlayfs" if ok else "native"

    def _write_configs(self, state: dict[str, Any], ip: str) -> None:
        ports = state["node_ports"]
        sd, pki = self.cluster.state_dir, self.cluster.pki
        for d in (
            self.containerd_dir,
            self.kubelet_root,
            self.cni_conf,
            self.cni_bin,
            self.ipam_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        for plugin in CNI_PLUGINS:
            link = self.cni_bin / plugin
            if not link.is_symlink():
                link.symlink_to(SYSTEM_CNI_BIN / plugin)
        (self.cni_conf / "10-kubetrain.conflist").write_text(
            json.dumps(cni_conflist(self.ipam_dir), indent=2)
        )
        (self.containerd_dir / "config.toml").write_text(
            containerd_config(
                root=self.containerd_root,
                state=self.containerd_dir / "state",
                socket_path=self.socket,
                cni_conf=self.cni_conf,
                cni_bin=self.cni_bin,
                snapshotter=state["snapshotter"],
            )
        )
        (self.dir / "kubelet-config.yaml").write_text(
            json.dumps(
                kubelet_config(
                    socket_path=self.socket,
                    ca=pki / "ca.crt",
                    ip=ip,
                    port=ports["kubelet"],
                    healthz_port=ports["kubelet-healthz"],
                    pod_logs=self.dir / "pod-logs",
                ),
                indent=2,
            )
        )
        (self.dir / "kube-proxy-config.yaml").write_text(
            json.dumps(
                kube_proxy_config(
                    kubeconfig=sd / "kube-proxy.kubeconfig",
                    healthz_port=ports["kube-proxy-healthz"],
                    metrics_port=ports["kube-proxy-metrics"],
                ),
                indent=2,
            )
        )
        (self.dir / "Corefile").write_text(
            corefile(
                ip=ip,
                kubeconfig=sd / "coredns.kubeconfig",
                health_port=ports["coredns-health"],
                ready_port=ports["coredns-ready"],
            )
        )

    # -- containerd / images

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        ctr = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io"]
        return _run([*ctr, *args], check=check, timeout=timeout)

    def has_image(self, ref: str, digest: str | None = None) -> bool:
        """`ref` is there (and, when `digest` is given, points at that manifest)."""
        for line in self.ctr("images", "ls", check=False).splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return digest is None or digest in fields
        return False

    def import_image(self, tar: Path, snapshotter: str) -> None:
        """Import an archive, leaving out the layers whose blobs containerd already has:
        after a source edit only the project layer is new, and reading the GB-sized deps
        layer through ``ctr import`` again took 107 s of the 109."""
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="kubetrain-import-") as tmp:
            thin = Path(tmp) / tar.name
            skipped = thin_archive(tar, self.content_digests(), thin)
            try:
                self._ctr_import(thin if skipped else tar, snapshotter)
            except ClusterError as e:
                if not skipped:
                    raise
                log(f"importing without the layers the node has failed ({e}); importing all")
                self._ctr_import(tar, snapshotter)
        kept = f", {skipped} layer(s) already on the node" if skipped else ""
        log(f"imported {tar.name} in {time.monotonic() - t0:.1f} s{kept}")

    def _ctr_import(self, tar: Path, snapshotter: str) -> None:
        self.ctr("images", "import", "--snapshotter", snapshotter, str(tar), timeout=1800)

    def content_digests(self) -> set[str]:
        """The blobs in containerd's content store (``sha256:...``)."""
        lines = self.ctr("content", "ls", "--quiet", check=False).split()
        return {line for line in lines if line.startswith("sha256:")}

    def _ensure_images(self, snapshotter: str) -> None:
        for ref, tar in build_node_images().items():
            if not self.has_image(ref):
                self.import_image(tar, snapshotter)

    def _purge_containers(self) -> list[str]:
        """Kill and delete every container (and task) of our containerd; return their netns
        paths. Pod sandboxes of a previous run are stale by definition once the kubelet is
        stopped."""
        netns: list[str] = []
        ids = self.ctr("containers", "ls", "-q", check=False).split()
        for cid in ids:
            with contextlib.suppress(ValueError):
                spec = json.loads(self.ctr("containers", "info", "--spec", cid, check=False))
                for ns in spec.get("linux", {}).get("namespaces", []):
                    if ns.get("type") == "network" and ns.get("path"):
                        netns.append(ns["path"])
        for cid in ids:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False, timeout=20)
        for cid in ids:
            self.ctr("tasks", "delete", "--force", cid, check=False, timeout=30)
            self.ctr("containers", "delete", cid, check=False, timeout=30)
        self._forget(ids)
        return sorted(set(netns))

    def _forget(self, ids: list[str]) -> None:
        """Files outside our dirs named after our containers: a killed shim's socket (in the
        shared /run/containerd/s, named by a hash of our address and the id) and libcni's
        cached results (only removed by a CNI DEL, which a killed sandbox never got)."""
        for cid in ids:
            digest = hashlib.sha256(f"{self.socket}/k8s.io/{cid}".encode()).hexdigest()
            Path(SHIM_SOCKET_DIR, digest).unlink(missing_ok=True)
            for f in Path(CNI_CACHE_DIR, "results").glob(f"*-{cid}-*"):
                f.unlink(missing_ok=True)

    # -- start

    def start(
        self, state: dict[str, Any], bin_dir: Path, left: Callable[[], float], tie: bool
    ) -> None:
        c, sd = self.cluster, self.cluster.state_dir
        t0 = time.monotonic()
        self._check_no_other_node()
        self._save_host()
        state["snapshotter"] = self._snapshotter()
        self._write_configs(state, state["node_ip"])
        c._save_state(state)

        c._spawn(
            state,
            "containerd",
            [
                shutil.which("containerd") or "containerd",
                f"--config={self.containerd_dir / 'config.toml'}",
                "--log-level=warn",
            ],
            tie,
        )
        c._wait(
            "containerd",
            lambda: self.socket.exists() and bool(self.ctr("version", check=False)),
            "its socket to answer",
            left(),
        )
        stale = self._purge_containers()
        self._remove_netns(stale)
        self._ensure_images(state["snapshotter"])

        for path, obj in dns_objects(state["node_ip"]):
            status, body = c.api("POST", path, obj)
            if status not in (200, 201, 409):
                raise ClusterError(f"creating {obj['kind']} {obj['metadata']['name']}: {body}")

        c._spawn(
            state,
            "kubelet",
            [
                str(bin_dir / "kubelet"),
                f"--config={self.dir / 'kubelet-config.yaml'}",
                f"--kubeconfig={sd / 'kubelet.kubeconfig'}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.kubelet_root / 'pki'}",
                f"--hostname-override={REAL_NODE}",
                f"--node-ip={state['node_ip']}",
                f"--node-labels={POOL_LABEL}={REAL_POOL},{REAL_NODE_LABEL}=true",
                "--register-with-taints={key}={value}:{effect}".format(**REAL_NODE_TAINT),
                "--v=1",
            ],
            tie,
        )
        c._wait("kubelet", self.ready, "the node to be Ready", left())
        ports = state["node_ports"]
        c._spawn(
            state,
            "kube-proxy",
            [
                str(bin_dir / "kube-proxy"),
                f"--config={self.dir / 'kube-proxy-config.yaml'}",
                "--v=1",
            ],
            tie,
        )
        c._spawn(
            state,
            "coredns",
            [str(bin_dir / "coredns"), "-conf", str(self.dir / "Corefile")],
            tie,
        )
        c._wait(
            "kube-proxy",
            lambda: c._probe(f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz"),
            "/healthz to answer ok",
            left(),
        )
        c._wait(
            "coredns",
            lambda: c._probe(f"http://127.0.0.1:{ports['coredns-ready']}/ready"),
            "/ready (its Kubernetes caches synced)",
            left(),
        )
        log(f"{REAL_NODE} Ready, with kube-proxy and CoreDNS, in {time.monotonic() - t0:.1f} s")

    def ready(self) -> bool:
        status, node = self.cluster.api("GET", f"/api/v1/nodes/{REAL_NODE}")
        if status != 200:
            return False
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = [
            t
            for t in node.get("spec", {}).get("taints", [])
            if t["key"].startswith("node.kubernetes.io/")
        ]
        return conds.get("Ready") == "True" and not taints

    # -- teardown

    def drain(self, timeout: float = 30.0) -> None:
        """Cordon the node and delete its pods, so the kubelet tears their sandboxes down
        through CNI (veths, IPs, portmap rules) before it stops."""
        c = self.cluster
        c.api(
            "PATCH",
            f"/api/v1/nodes/{REAL_NODE}",
            {"spec": {"unschedulable": True}},
            content_type="application/strategic-merge-patch+json",
        )
        selector = f"fieldSelector=spec.nodeName%3D{REAL_NODE}"
        status, body = c.api("GET", f"/api/v1/pods?{selector}")
        if status != 200:
            return
        for pod in body.get("items", []):
            meta = pod["metadata"]
            c.api(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 1},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = c.api("GET", f"/api/v1/pods?{selector}")
            if status != 200 or not body.get("items"):
                return
            time.sleep(0.3)
        log(f"pods on {REAL_NODE} still there after {timeout:.0f} s; killing their containers")

    def cleanup_host(self, bin_dir: Path | None) -> list[str]:
        """After the node processes stopped (containerd last): everything they left behind.
        Returns a list of what was undone, for the log."""
        done: list[str] = []
        if bin_dir and (bin_dir / "kube-proxy").exists():
            _run([str(bin_dir / "kube-proxy"), "--cleanup", "--v=0"], check=False)
        killed = self._kill_leftovers()
        if killed:
            done.append(f"killed {killed} leftover container processes")
        self._remove_netns(_bridge_netns())  # sandboxes whose containerd died with them
        mounts = _mounts_under([str(self.dir), str(CONTAINERD_ROOT)])
        for point in mounts:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        if mounts:
            done.append(f"unmounted {len(mounts)} mounts")
        host = self._load_host()
        for cmd in ("iptables", "ip6tables"):
            if self._iptables_cleanup(cmd, host.get("iptables", {}).get(cmd)):
                done.append(f"{cmd} rules")
        if Path(f"/sys/class/net/{CNI_BRIDGE}").exists():
            _run(["ip", "link", "delete", CNI_BRIDGE], check=False)
            done.append(f"bridge {CNI_BRIDGE}")
        for top in _cgroup_dirs():
            _rmdir_tree(top)
        if _cgroup_dirs():
            log(f"some kubepods cgroups could not be removed: {_cgroup_dirs()}")
        self._remove_cni_cache()
        self._remove_log_links()
        for f in KUBELET_FIXED_FILES:
            Path(f).unlink(missing_ok=True)
        for p in HOST_DIRS:
            if p not in host.get("existed", [p]):
                _remove_empty_tree(Path(p))
        changed = restore_sysctls(host.get("sysctls", {}))
        if changed:
            done.append("sysctls " + ", ".join(changed))
        if not _mounts_under([str(self.dir)]):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.host_file.unlink(missing_ok=True)
        return done

    def _load_host(self) -> dict[str, Any]:
        try:
            return json.loads(self.host_file.read_text())
        except (OSError, ValueError):
            return {}

    def _kill_leftovers(self) -> int:
        """SIGKILL what outlived the CRI cleanup: processes in kubepods cgroups (only our
        kubelet makes them) and shims serving our containerd socket."""
        victims: set[int] = set()
        for top in _cgroup_dirs():
            victims |= _cgroup_pids(top)
        needle = f"-address\0{self.socket}\0".encode()
        shim_ids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    cmd = (entry / "cmdline").read_bytes()
                    if b"containerd-shim" in cmd.split(b"\0")[0] and needle in cmd + b"\0":
                        victims.add(int(entry.name))
                        argv = cmd.decode().split("\0")
                        shim_ids.append(argv[argv.index("-id") + 1])
        victims.discard(os.getpid())
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._forget(shim_ids)
        return len(victims)

    @staticmethod
    def _remove_netns(paths: list[str]) -> None:
        for path in paths:
            subprocess.run(["umount", path], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                os.unlink(path)

    @staticmethod
    def _iptables_cleanup(cmd: str, before: dict[str, list[str]] | None) -> bool:
        if shutil.which(f"{cmd}-save") is None:
            return False
        save = _run([f"{cmd}-save"], check=False)
        prefix = REAL_POD_CIDR.rsplit(".", 1)[0] + "."
        plans = iptables_cleanup_plan(save, prefix if cmd == "iptables" else "\0none", before)
        for table, lines in plans.items():
            proc = subprocess.run(
                [f"{cmd}-restore"],
                input="\n".join(lines) + "\n",
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                log(f"{cmd}-restore of table {table} failed: {proc.stderr.strip()}")
        return bool(plans)

    def _remove_log_links(self) -> None:
        """The kubelet links each container's log into /var/log/containers (a fixed path)."""
        with contextlib.suppress(OSError):
            for link in Path("/var/log/containers").iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.dir)):
                    link.unlink()

    @staticmethod
    def _remove_cni_cache() -> None:
        """libcni caches each attachment's result under /var/lib/cni/results."""
        results = Path(CNI_CACHE_DIR, "results")
        with contextlib.suppress(OSError):
            for f in results.glob(f"{CNI_NETWORK}-*"):
                f.unlink()


def _remove_empty_tree(top: Path) -> None:
    """Remove `top` if it holds nothing but empty directories (mount points are skipped)."""
    if not top.is_dir() or os.path.ismount(top):
        return
    for dirpath, _dirs, files in sorted(os.walk(top), key=lambda e: e[0].count("/"), reverse=True):
        if not files and not os.path.ismount(dirpath):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


# ----------------------------------------------------------------------------- the cluster


class LocalCluster:
    """The control plane in one state dir: PKI, etcd data, logs, kubeconfigs and a pid file.

    Every process it starts gets its own process group; ``cluster.json`` records each pid with
    its kernel start time, so ``down`` (from any process) stops exactly those and nothing else.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        bin_dir: Path | str | None = None,
        audit: bool | None = None,
        apiserver_port: int | None = None,
        crds: Path | str | None = None,
        node: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        explicit_bin = bin_dir or os.environ.get("KUBETRAIN_BIN_DIR")
        self._bin_dir = Path(explicit_bin) if explicit_bin else None
        self._explicit_bin = bin_dir is not None
        self.audit = (
            audit
            if audit is not None
            else os.environ.get("KUBETRAIN_AUDIT", "") not in ("", "0", "false")
        )
        env_port = os.environ.get("KUBETRAIN_APISERVER_PORT")
        self.apiserver_port = apiserver_port or (int(env_port) if env_port else None)
        # CRDs applied before the controller-manager starts: its garbage collector discovers
        # resource types at start and then only every 30 s, so owners of a CRD kind installed
        # later are not watched for up to 30 s (their children linger after deletion).
        self.crds = Path(crds) if crds else None
        self.node = node  # add the real worker (kubelet, containerd, kube-proxy, CoreDNS)
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.state_file = self.state_dir / "cluster.json"
        self.audit_log = self.state_dir / "audit.log"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.real_node = RealNode(self)

    # -- binaries

    def bin_dir(self) -> Path:
        """Where the binaries are: explicit / $KUBETRAIN_BIN_DIR, else build-tools.sh's key dir."""
        if self._bin_dir is None:
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--dir"], capture_output=True, text=True, check=True
            )
            self._bin_dir = Path(out.stdout.strip().splitlines()[-1])
        return self._bin_dir

    def missing_binaries(self) -> list[str]:
        wanted = (*BINARIES, *NODE_BINARIES) if self.node else BINARIES
        return [b for b in wanted if not os.access(self.bin_dir() / b, os.X_OK)]

    def ensure_binaries(self, build: bool) -> Path:
        missing = self.missing_binaries()
        if missing and build and not os.environ.get("KUBETRAIN_BIN_DIR"):
            log("binaries missing; building them with e2e/build-tools.sh (cold: ~15 min, 2 cores)")
            groups = ["core", "node"] if self.node else ["core"]
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), *groups], stdout=subprocess.PIPE, text=True, check=False
            )
            if out.returncode != 0:
                raise ClusterError(
                    f"e2e/build-tools.sh failed (exit {out.returncode}); see its output above"
                )
            self._bin_dir = Path(out.stdout.strip().splitlines()[-1])
            missing = self.missing_binaries()
        if missing:
            hint = (
                "    (set by KUBETRAIN_BIN_DIR / --bin-dir; unset it to use e2e/build-tools.sh's)"
                if os.environ.get("KUBETRAIN_BIN_DIR") or self._explicit_bin
                else "    Build them with:  e2e/build-tools.sh     (or pass --build to `up`)"
            )
            raise ClusterError(
                f"missing binaries in {self.bin_dir()}: {', '.join(missing)}.\n{hint}"
            )
        return self.bin_dir()

    # -- state file

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize up/down on one state dir (two shells, or two pytest sessions)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _is_ours(rec: dict[str, Any]) -> bool:
        """True only for the very process we started (same pid, same start time, same binary)."""
        pid = rec.get("pid")
        if not isinstance(pid, int) or not _alive(pid) or _starttime(pid) != rec.get("starttime"):
            return False
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
        return argv0 == rec.get("argv0")

    # -- HTTP against the cluster (stdlib only)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        server: str | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """Admin request to the API server; returns (status, parsed JSON or text)."""
        server = server or self._load_state().get("server", "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            server + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    @staticmethod
    def _probe(url: str, ctx: ssl.SSLContext | None = None) -> bool:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    # -- up

    def up(
        self, *, build: bool = False, timeout: float = 90.0, tie_to_parent: bool = False
    ) -> ClusterInfo:
        """Start the cluster, or reuse a healthy one with these binaries (and audit log if asked).

        `tie_to_parent`: the components are killed if this process dies (for test sessions).
        Raises ClusterError naming the failed component, with the tail of its log.
        """
        bin_dir = self.ensure_binaries(build)
        if self.node:
            self.real_node.ensure_host_deps()
        with self._locked():
            state = self._load_state()
            if (
                state
                and self._healthy(state)
                and state.get("bin_dir") == str(bin_dir)
                and (state.get("audit") or not self.audit)
                and (state.get("node") or not self.node)
            ):
                log(f"already up: {state['server']}")
                return self.info(state)
            if state:
                self._stop_all(state)
            t0 = time.monotonic()
            try:
                state = self._start(bin_dir, timeout, tie_to_parent)
            except BaseException:
                self._stop_all(self._load_state())
                raise
            log(f"up in {time.monotonic() - t0:.1f} s: {state['server']} (state: {self.state_dir})")
            return dataclasses.replace(self.info(state), started=True)

    def info(self, state: dict[str, Any] | None = None) -> ClusterInfo:
        state = state or self._load_state()
        if not state:
            raise ClusterError(
                f"no cluster in {self.state_dir}; start one with `e2e/local-cluster.sh up`"
            )
        return ClusterInfo(
            state_dir=self.state_dir,
            kubeconfig=self.kubeconfig,
            server=state["server"],
            bin_dir=Path(state["bin_dir"]),
            audit_log=Path(state["audit_log"]) if state.get("audit_log") else None,
        )

    def _start(self, bin_dir: Path, timeout: float, tie_to_parent: bool) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        ensure_pki(self.pki)
        ip = node_ip() if self.node else None
        if ip:
            ensure_node_pki(self.pki, ip)
        self.logs.mkdir(exist_ok=True)
        etcd_dir = self.state_dir / "etcd"
        if etcd_dir.exists():
            shutil.rmtree(etcd_dir)  # every `up` starts from an empty cluster
        if self.audit_log.exists():
            self.audit_log.unlink()

        taken: set[int] = set()
        if self.apiserver_port:
            _check_port_free(self.apiserver_port)
            taken.add(self.apiserver_port)
        ports = {
            "apiserver": self.apiserver_port or _free_port(taken),
            "etcd": _free_port(taken),
            "etcd-peer": _free_port(taken),
            "controller-manager": _free_port(taken),
            "scheduler": _free_port(taken),
        }
        server = f"https://127.0.0.1:{ports['apiserver']}"
        state: dict[str, Any] = {
            "server": server,
            "ports": ports,
            "bin_dir": str(bin_dir),
            "audit": self.audit,
            "audit_log": str(self.audit_log) if self.audit else None,
            "components": {},
        }
        users = ["admin", "controller-manager", "scheduler", "kwok"]
        if ip:
            state.update(node=True, node_ip=ip, node_ports=self._node_ports(taken))
            users += ["kubelet", "kube-proxy", "coredns"]
        self._save_state(state)
        for user in users:
            name = "kubeconfig" if user == "admin" else f"{user}.kubeconfig"
            _write_kubeconfig(self.state_dir / name, server, self.pki, user)

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        # etcd: plain HTTP on loopback and no fsync; it is a throwaway test store.
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=kubetrain",
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kubetrain={peer_url}",
                "--log-level=warn",
                "--unsafe-no-fsync",
            ],
            tie_to_parent,
        )
        self._wait("etcd", lambda: self._probe(etcd_url + "/health"), "/health to answer", left())

        pki = self.pki
        apiserver = [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={ports['apiserver']}",
            *self._apiserver_address_flags(ip),
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # front-proxy (aggregation) flags: the controllers read this CA from the cluster
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
        ]
        if self.audit:
            policy = self.state_dir / "audit-policy.yaml"
            policy.write_text(_AUDIT_POLICY)
            apiserver += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
            ]
        self._spawn(state, "kube-apiserver", apiserver, tie_to_parent)
        ctx = self._ssl_context()
        self._wait(
            "kube-apiserver",
            lambda: self._probe(server + "/readyz", ctx),
            "/readyz to answer ok",
            left(),
        )

        if self.crds:
            self._apply_crds(bin_dir, left())

        sd = self.state_dir
        self._spawn(
            state,
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={sd / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={sd / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={sd / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--cluster-name={CLUSTER_NAME}",
                # the garbage collector is bound by client-side rate limits (20 qps by default)
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--controllers=*",
            ],
            tie_to_parent,
        )
        sched_cfg = sd / "scheduler-config.yaml"
        sched_cfg.write_text(
            _SCHEDULER_CONFIG.replace("{kubeconfig}", str(sd / "scheduler.kubeconfig"))
        )
        self._spawn(
            state,
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--config={sched_cfg}",
                f"--authentication-kubeconfig={sd / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={sd / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
            ],
            tie_to_parent,
        )
        stages = sd / "kwok-stages.yaml"
        stages.write_text(_KWOK_STAGES)
        kwok_home = sd / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        self._spawn(
            state,
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={sd / 'kwok.kubeconfig'}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--v=WARN",  # INFO logs every node/pod patch: heavy I/O in benchmarks
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
            tie_to_parent,
            env={"KWOK_WORKDIR": str(kwok_home)},
        )

        for pool in NODE_POOLS:
            for name in pool.node_names():
                status, body = self.api("POST", "/api/v1/nodes", node_manifest(pool, name), server)
                if status not in (200, 201):
                    raise ClusterError(f"creating node {name} failed: HTTP {status}: {body}")

        insecure = ssl._create_unverified_context()  # self-signed serving certs, loopback only
        self._wait(
            "kube-controller-manager",
            lambda: self._probe(
                f"https://127.0.0.1:{ports['controller-manager']}/healthz", insecure
            ),
            "/healthz to answer ok",
            left(),
        )
        self._wait(
            "kube-scheduler",
            lambda: self._probe(f"https://127.0.0.1:{ports['scheduler']}/healthz", insecure),
            "/healthz to answer ok",
            left(),
        )
        self._wait(
            "kwok",
            lambda: self._nodes_ready(server),
            "all simulated nodes to be Ready and untainted",
            left(),
        )
        # Pods are rejected until the namespace's `default` ServiceAccount exists.
        self._wait(
            "kube-controller-manager",
            lambda: (
                self.api(
                    "GET", "/api/v1/namespaces/default/serviceaccounts/default", server=server
                )[0]
                == 200
            ),
            "the default ServiceAccount to be created",
            left(),
        )
        if ip:
            self.real_node.start(state, bin_dir, left, tie_to_parent)
        return state

    @staticmethod
    def _node_ports(taken: set[int]) -> dict[str, int]:
        names = ("kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics")
        return {n: _free_port(taken) for n in (*names, "coredns-health", "coredns-ready")}

    def _apiserver_address_flags(self, ip: str | None) -> list[str]:
        """Loopback only without the real node. With it, the API server also listens on the
        node's address and publishes it as the `kubernetes` Service endpoint (pods connect
        there), and reaches kubelets by InternalIP with a client cert (logs, exec)."""
        if not ip:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # loopback cannot be the `kubernetes` Service endpoint; don't try to publish it
                "--endpoint-reconciler-type=none",
            ]
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={ip}",
            "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki / 'apiserver-kubelet-client.key'}",
        ]

    def _apply_crds(self, bin_dir: Path, timeout: float) -> None:
        """`kubectl apply` the CRD file or folder and wait until every CRD is Established."""
        assert self.crds is not None
        if not self.crds.exists():
            raise ClusterError(f"CRD path {self.crds} does not exist")
        base = [str(bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
        deadline = time.monotonic() + timeout
        for args in (
            ["apply", "--server-side", "--force-conflicts", "-f", str(self.crds)],
            [
                "wait",
                "--for=condition=Established",
                f"--timeout={int(timeout)}s",
                "-f",
                str(self.crds),
            ],
        ):
            while True:
                proc = subprocess.run(
                    base + args, capture_output=True, text=True, check=False, timeout=timeout + 10
                )
                # A CRD created a moment ago may have no status.conditions yet, and
                # `kubectl wait` then fails at once with an "accessor error": ask again.
                transient = "accessor error" in proc.stderr
                if proc.returncode == 0 or not transient or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if proc.returncode != 0:
                raise ClusterError(
                    f"installing the CRDs from {self.crds} failed (kubectl {args[0]}):\n"
                    f"    {proc.stderr.strip() or proc.stdout.strip()}"
                )

    def _spawn(
        self,
        state: dict[str, Any],
        name: str,
        argv: list[str],
        tie_to_parent: bool,
        env: dict[str, str] | None = None,
        *,
        log_mode: str = "wb",
    ) -> None:
        logfile = open(self.logs / f"{name}.log", log_mode)  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                # runs before exec and only calls prctl(2), so it is safe even with threads
                preexec_fn=_parent_death_signal if tie_to_parent else None,  # noqa: PLW1509
            )
        except OSError as e:
            raise ClusterError(f"cannot start {name} ({argv[0]}): {e}") from None
        finally:
            logfile.close()
        self._children[name] = proc
        state["components"][name] = {
            "pid": proc.pid,
            "starttime": _starttime(proc.pid),
            "argv0": argv[0],
            "argv": argv,  # what restart_apiserver() starts again
            "env": env or {},
            "log": str(self.logs / f"{name}.log"),
        }
        self._save_state(state)

    def _wait(self, name: str, check: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `check` until true; fail fast, with the log tail, if the component exits."""
        deadline = time.monotonic() + timeout
        proc = self._children[name]
        delay = 0.05
        while True:
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {proc.returncode} while waiting for {what}.\n"
                    + self._log_excerpt(name)
                )
            if check():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{name} did not get ready in time (waited {timeout:.0f} s for {what}).\n"
                    + self._log_excerpt(name)
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _log_excerpt(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return f"  last lines of {path}:\n{_tail(path)}"

    def _nodes_ready(self, server: str | None = None) -> bool:
        status, body = self.api("GET", f"/api/v1/nodes?labelSelector={POOL_LABEL}", server=server)
        if status != 200:
            return False
        expected = {n for pool in NODE_POOLS for n in pool.node_names()}
        ready = set()
        for node in body.get("items", []):
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            # node.kubernetes.io/not-ready etc. are lifted by the node lifecycle controller
            system_taints = [
                t
                for t in node["spec"].get("taints", [])
                if t["key"].startswith("node.kubernetes.io/")
            ]
            if conds.get("Ready") == "True" and not system_taints:
                ready.add(node["metadata"]["name"])
        return expected <= ready

    def _healthy(self, state: dict[str, Any]) -> bool:
        comps = state.get("components", {})
        if set(comps) != set(self._components(state)) or not all(
            self._is_ours(c) for c in comps.values()
        ):
            return False
        return self._probe(state["server"] + "/readyz", self._ssl_context())

    # -- faults (for tests: the same API server restarted, etcd paused)

    def component_pid(self, name: str) -> int:
        """The pid of a running component of this cluster (e.g. to SIGSTOP etcd)."""
        rec = self._load_state().get("components", {}).get(name)
        if not rec or not self._is_ours(rec):
            raise ClusterError(f"{name} is not running in {self.state_dir}")
        return int(rec["pid"])

    def stop_apiserver(self, grace: float = 3.0) -> None:
        """Stop the API server only (etcd and the controllers keep running); its command
        line stays in the state, for start_apiserver(). It stops listening at once on
        SIGTERM but then lingers (~10 s, open watches), hence the short grace."""
        with self._locked():
            state = self._load_state()
            rec = state.get("components", {}).get("kube-apiserver")
            if not rec or "argv" not in rec:
                raise ClusterError("no restartable kube-apiserver (started before `argv` was kept)")
            self._stop_component("kube-apiserver", rec, grace)

    def start_apiserver(self, *, timeout: float = 60.0, tie_to_parent: bool = False) -> None:
        """Start the API server again with the same flags: same port, certs and etcd; its
        log is appended to. Returns once /readyz answers ok."""
        with self._locked():
            state = self._load_state()
            rec = state["components"]["kube-apiserver"]
            if self._is_ours(rec):
                raise ClusterError("kube-apiserver is still running; stop_apiserver() first")
            self._spawn(
                state, "kube-apiserver", rec["argv"], tie_to_parent, rec.get("env"), log_mode="ab"
            )
            ctx = self._ssl_context()
            self._wait(
                "kube-apiserver",
                lambda: self._probe(state["server"] + "/readyz", ctx),
                "/readyz to answer ok after a restart",
                timeout,
            )

    def restart_apiserver(
        self, *, down_for: float = 0.0, timeout: float = 60.0, tie_to_parent: bool = False
    ) -> None:
        """Stop the API server, keep it down for `down_for` seconds, start it again."""
        self.stop_apiserver()
        time.sleep(down_for)
        self.start_apiserver(timeout=timeout, tie_to_parent=tie_to_parent)

    # -- down / status

    def down(self) -> list[str]:
        """Stop every process this state dir started (pid-verified); return what was stopped."""
        with self._locked():
            return self._stop_all(self._load_state())

    @staticmethod
    def _components(state: dict[str, Any]) -> tuple[str, ...]:
        """What this state's cluster runs, in start order."""
        return (*COMPONENTS, *NODE_COMPONENTS) if state.get("node") else COMPONENTS

    def _stop_all(self, state: dict[str, Any], grace: float = 10.0) -> list[str]:
        comps = state.get("components", {})
        stopped: list[str] = []
        if state.get("node"):
            stopped += self._stop_node(state, grace)
        for name in reversed(COMPONENTS):
            if self._stop_component(name, comps.get(name), grace):
                stopped.append(f"{name} (pid {comps[name]['pid']})")
        if state:
            state["components"] = {}
            state.pop("node", None)
            self._save_state(state)
        return stopped

    def _stop_node(self, state: dict[str, Any], grace: float) -> list[str]:
        """Drain the real node, stop its processes (containers before containerd), then undo
        its host changes. Safe to run again after a crash: each step checks what is left."""
        comps = state.get("components", {})
        node, stopped = self.real_node, []
        ours = {n: bool(comps.get(n)) and self._is_ours(comps[n]) for n in NODE_COMPONENTS}
        if (
            ours["kubelet"]
            and comps.get("kube-apiserver")
            and self._is_ours(comps["kube-apiserver"])
        ):
            node.drain()
        for name in ("coredns", "kube-proxy", "kubelet"):
            if self._stop_component(name, comps.get(name), grace):
                stopped.append(f"{name} (pid {comps[name]['pid']})")
        netns = node._purge_containers() if ours["containerd"] else []
        if self._stop_component("containerd", comps.get("containerd"), grace):
            stopped.append(f"containerd (pid {comps['containerd']['pid']})")
        node._remove_netns(netns)
        if node.other_node_running():  # its cgroups, chains and bridge are not ours to remove
            log("another real node runs on this machine: host cleanup left to its `down`")
            return stopped
        bin_dir = Path(state["bin_dir"]) if state.get("bin_dir") else None
        undone = node.cleanup_host(bin_dir)
        if undone:
            log("node cleanup: " + "; ".join(undone))
        return stopped

    def _stop_component(self, name: str, rec: dict[str, Any] | None, grace: float) -> bool:
        """SIGTERM (then SIGKILL) the process group of `rec` if it is still the one we
        started; True when it was running."""
        if not rec:
            return False
        pid = rec["pid"]
        if not self._is_ours(rec):
            self._reap(name)
            return False
        with contextlib.suppress(ProcessLookupError):
            # start_new_session made the component its group leader: pgid == pid
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (_alive(pid) or _group_members(pid)) and time.monotonic() < deadline:
            self._reap(name)
            time.sleep(0.05)
        if _alive(pid) or _group_members(pid):
            log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f} s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while (_alive(pid) or _group_members(pid)) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.05)
        if _alive(pid) or _group_members(pid):
            raise ClusterError(f"{name} (pid {pid}) is still running after SIGKILL")
        self._reap(name)
        return True

    def _reap(self, name: str) -> None:
        """Collect our own child's exit status so it does not linger as a zombie."""
        proc = self._children.get(name)
        if proc is not None and proc.poll() is not None:
            self._children.pop(name, None)

    def status(self) -> dict[str, Any]:
        state = self._load_state()
        comps = state.get("components", {})
        out: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "server": state.get("server"),
            "node": REAL_NODE if state.get("node") else None,
            "components": {},
        }
        for name in self._components(state):
            rec = comps.get(name)
            if rec and self._is_ours(rec):
                rss = _rss_mib(rec["pid"])
                out["components"][name] = {
                    "pid": rec["pid"],
                    "running": True,
                    "rss_mib": round(rss or 0, 1),
                }
            else:
                out["components"][name] = {"pid": rec["pid"] if rec else None, "running": False}
        running = [c["running"] for c in out["components"].values()]
        out["ready"] = (
            all(running)
            and bool(state)
            and self._probe(state["server"] + "/readyz", self._ssl_context())
        )
        out["state"] = "up" if out["ready"] else ("partial" if any(running) else "down")
        return out

    # -- images on the real node

    def _containerd_state(self) -> dict[str, Any]:
        state = self._load_state()
        rec = state.get("components", {}).get("containerd")
        if not (state.get("node") and rec and self._is_ours(rec)):
            raise ClusterError(
                f"no real node runs in {self.state_dir}; "
                "start it with `e2e/local-cluster.sh up --node`"
            )
        return state

    def import_image(self, tar_path: Path | str) -> None:
        """Load an image archive (OCI layout or docker-archive tar) into the real node's
        containerd, where pods with `imagePullPolicy: Never` find it; it survives `down`."""
        tar = Path(tar_path)
        if not tar.is_file():
            raise ClusterError(f"image archive {tar} does not exist")
        state = self._containerd_state()
        self.real_node.import_image(tar, state.get("snapshotter", "overlayfs"))

    def has_image(self, ref: str, digest: str | None = None) -> bool:
        """True when the real node's containerd has `ref` (e.g. localhost/kubetrain/busybox:e2e),
        and, with `digest`, when the ref points at that manifest (a rebuilt image keeps its tag)."""
        self._containerd_state()
        return self.real_node.has_image(ref, digest)

    def ensure_image(self, tar_path: Path | str) -> bool:
        """Import an OCI archive unless the node already has its ref at its digest; True
        when it imported. Layers already present are not unpacked again."""
        ref, digest = archive_image(Path(tar_path))
        if self.has_image(ref, digest):
            return False
        self.import_image(tar_path)
        return True


def archive_image(tar: Path) -> tuple[str, str]:
    """The ref and manifest digest of an OCI archive, from its index.json."""
    with tarfile.open(tar) as archive:
        member = archive.extractfile("index.json")
        if member is None:
            raise ClusterError(f"{tar} has no index.json: not an OCI archive")
        (manifest,) = json.load(member)["manifests"]
    ref = manifest.get("annotations", {}).get("io.containerd.image.name", "")
    return ref, manifest["digest"]


def thin_archive(tar: Path, present: set[str], dest: Path) -> int:
    """Write to ``dest`` the OCI archive ``tar`` without the layer blobs in ``present``;
    return how many were left out (0: nothing written, import ``tar`` itself). containerd
    then finds those layers in its content store, and their snapshots unpacked."""
    oci = _load_oci()
    try:
        layers = oci.layers_in_archive(tar)
    except (KeyError, ValueError):
        return 0  # not an OCI layout (a docker-archive, say): import it whole
    skip = {oci.blob_name(layer.digest) for layer in layers if layer.digest in present}
    if not skip:
        return 0
    with tarfile.open(tar) as archive, tarfile.open(dest, "w") as out:
        for member in archive:
            if member.name not in skip:
                out.addfile(member, archive.extractfile(member) if member.isfile() else None)
    return len(skip)


# ----------------------------------------------------------------------------- CLI


def _env_lines(info: ClusterInfo) -> str:
    return (
        f"export KUBECONFIG={info.kubeconfig}\n"
        f"export KUBETRAIN_BIN_DIR={info.bin_dir}\n"
        f'export PATH="{info.bin_dir}:$PATH"\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local-cluster.sh",
        description="Local Kubernetes control plane + kwok GPU node pools for cluster tests.",
    )
    parser.add_argument("command", choices=["up", "down", "env", "status", "import"])
    parser.add_argument("file", nargs="?", type=Path, help="import: image archive (.tar)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default: $KUBETRAIN_CLUSTER_DIR or ${KUBETRAIN_CACHE:-~/.cache/kubetrain}/cluster",
    )
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="default: $KUBETRAIN_BIN_DIR or build-tools.sh's dir",
    )
    parser.add_argument(
        "--build", action="store_true", help="up: build missing binaries with e2e/build-tools.sh"
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help=f"up: add a real worker node ({REAL_NODE}: kubelet, containerd, kube-proxy, CoreDNS)",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        default=None,
        help="up: write an API audit log to <state>/audit.log (also KUBETRAIN_AUDIT=1)",
    )
    parser.add_argument(
        "--apiserver-port",
        type=int,
        default=None,
        help="up: fixed API server port (default: a free one)",
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="up: seconds to wait for readiness"
    )
    parser.add_argument(
        "--crds",
        type=Path,
        default=DEFAULT_CRDS if DEFAULT_CRDS.is_dir() else None,
        help="up: CRD file or folder to install before the controllers start (default: crds/)",
    )
    parser.add_argument("--no-crds", dest="crds", action="store_const", const=None)
    parser.add_argument("--json", action="store_true", help="status: machine-readable output")
    args = parser.parse_intermixed_args(argv)  # `import --state-dir D FILE` too

    cluster = LocalCluster(
        args.state_dir,
        bin_dir=args.bin_dir,
        audit=args.audit,
        apiserver_port=args.apiserver_port,
        crds=args.crds,
        node=args.node,
    )
    try:
        if args.command == "up":
            info = cluster.up(build=args.build, timeout=args.timeout)
            sys.stdout.write(_env_lines(info))
        elif args.command == "down":
            stopped = cluster.down()
            log("stopped " + ", ".join(stopped) if stopped else "nothing was running")
        elif args.command == "env":
            sys.stdout.write(_env_lines(cluster.info()))
        elif args.command == "import":
            if not args.file:
                parser.error("import needs an image archive: local-cluster.sh import FILE.tar")
            cluster.import_image(args.file)
        else:
            st = cluster.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                node = f"  real node: {st['node']}" if st["node"] else ""
                print(f"cluster: {st['state']}  server: {st['server'] or '-'}{node}")
                print(f"  state dir: {st['state_dir']}")
                for name, c in st["components"].items():
                    what = (
                        f"running  pid {c['pid']:<8} rss {c['rss_mib']:.0f} MiB"
                        if c["running"]
                        else "stopped"
                    )
                    print(f"  {name:<24} {what}")
            return {"up": 0, "partial": 3}.get(st["state"], 1)
    except ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
