#!/usr/bin/env python3
"""A real Kubernetes control plane on 127.0.0.1, with kwok-simulated CPU and GPU node pools.

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as plain processes
(no Docker, no kubelet), so the cluster tests exercise the real API server (OpenAPI + CEL
validation, RBAC, admission), the real scheduler (taints, extended resources) and the real
garbage collector on a 2-core CI machine. kwok keeps the fake nodes Ready and marks their pods
Running, and it deletes pods once they are marked for deletion, as a kubelet would.

Standard library only: this runs before the project's virtualenv exists.

CLI: ``python3 e2e/localcluster.py up|down|env|status`` (see ``--help``); library use:
``LocalCluster(state_dir).up(build=True)`` / ``.down()``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
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
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pki / "sa.key"
    )
    _openssl("pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


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
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.state_file = self.state_dir / "cluster.json"
        self.audit_log = self.state_dir / "audit.log"
        self._children: dict[str, subprocess.Popen[bytes]] = {}

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
        return [b for b in BINARIES if not os.access(self.bin_dir() / b, os.X_OK)]

    def ensure_binaries(self, build: bool) -> Path:
        missing = self.missing_binaries()
        if missing and build and not os.environ.get("KUBETRAIN_BIN_DIR"):
            log("binaries missing; building them with e2e/build-tools.sh (cold: ~15 min, 2 cores)")
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "core"], stdout=subprocess.PIPE, text=True, check=False
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
        self, method: str, path: str, body: dict[str, Any] | None = None, server: str | None = None
    ) -> tuple[int, Any]:
        """Admin request to the API server; returns (status, parsed JSON or text)."""
        server = server or self._load_state().get("server", "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            server + path, data=data, method=method, headers={"Content-Type": "application/json"}
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
        with self._locked():
            state = self._load_state()
            if (
                state
                and self._healthy(state)
                and state.get("bin_dir") == str(bin_dir)
                and (state.get("audit") or not self.audit)
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
        self._save_state(state)
        for user in ("admin", "controller-manager", "scheduler", "kwok"):
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
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            "--advertise-address=127.0.0.1",
            # loopback cannot be the `kubernetes` Service endpoint; don't try to publish it
            "--endpoint-reconciler-type=none",
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
        return state

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
    ) -> None:
        logfile = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
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
        if set(comps) != set(COMPONENTS) or not all(self._is_ours(c) for c in comps.values()):
            return False
        return self._probe(state["server"] + "/readyz", self._ssl_context())

    # -- down / status

    def down(self) -> list[str]:
        """Stop every process this state dir started (pid-verified); return what was stopped."""
        with self._locked():
            return self._stop_all(self._load_state())

    def _stop_all(self, state: dict[str, Any], grace: float = 10.0) -> list[str]:
        comps = state.get("components", {})
        stopped: list[str] = []
        for name in reversed(COMPONENTS):
            rec = comps.get(name)
            if not rec:
                continue
            pid = rec["pid"]
            if self._is_ours(rec):
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
                stopped.append(f"{name} (pid {pid})")
            self._reap(name)
        if state:
            state["components"] = {}
            self._save_state(state)
        return stopped

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
            "components": {},
        }
        for name in COMPONENTS:
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
    parser.add_argument("command", choices=["up", "down", "env", "status"])
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
    args = parser.parse_args(argv)

    cluster = LocalCluster(
        args.state_dir,
        bin_dir=args.bin_dir,
        audit=args.audit,
        apiserver_port=args.apiserver_port,
        crds=args.crds,
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
        else:
            st = cluster.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                print(f"cluster: {st['state']}  server: {st['server'] or '-'}")
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
