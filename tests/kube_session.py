"""Fixtures for the ``cluster`` and ``e2e`` tiers: one real Kubernetes control plane for the
whole session (``tests/conftest.py`` imports them, so both tiers share it).

By default the session starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok (simulated ``kubetrain.io/pool`` = cpu / a100 / h100 nodes) with ``e2e/localcluster.py``,
building the binaries with ``e2e/build-tools.sh`` if they are missing, and stops them at the end.
A healthy cluster already running in the same state dir (``e2e/local-cluster.sh up``) is reused
and left running, which makes the edit-test loop fast.

``KUBETRAIN_TEST_KUBECONFIG=/path`` runs the tests against that cluster instead (e.g. kind on a
machine with Docker); nothing is started or stopped then, and tests that need the simulated GPU
pools skip.

Reusable fixtures: ``kubeconfig_path``, ``kube_api`` (admin ApiClient), ``namespace`` (fresh per
test), ``sa_api_client`` (an ApiClient acting as a ServiceAccount), ``kubectl``, ``cluster_info``,
``trainingjob_crd`` (the CRD from ``crds/`` installed and Established), ``gpu_pools``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "kubetrain.io_trainingjobs.yaml"
EXAMPLES_DIR = REPO_ROOT / "examples"
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"

T = TypeVar("T")


def _load_localcluster() -> ModuleType:
    """Import e2e/localcluster.py (a stdlib-only script, not a package) as a module."""
    name = "kubetrain_e2e_localcluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "e2e" / "localcluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


localcluster = _load_localcluster()


def wait_until(
    probe: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy and return it (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or probe}")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)
        last = probe()
    return last


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing control-plane binaries before any test starts, so a cold build (minutes)
    is not charged to the first test's timeout. Only when cluster tests are selected."""
    if os.environ.get("KUBETRAIN_TEST_KUBECONFIG") or session.config.option.collectonly:
        return
    if not any(_tier(item) in ("cluster", "e2e") for item in session.items):
        return
    # On failure the `cluster_info` fixture reports it, with the build hint, on first use.
    with contextlib.suppress(localcluster.ClusterError):
        localcluster.LocalCluster(node=wants_real_node(session)).ensure_binaries(build=True)


def _tier(item: pytest.Item) -> str:
    return Path(item.path).relative_to(Path(__file__).parent).parts[0]


def wants_real_node(session: pytest.Session) -> bool:
    """The e2e tier runs real pods: the session's cluster then gets the real node too
    (kubelet, containerd and iptables need root)."""
    return os.geteuid() == 0 and any(_tier(item) == "e2e" for item in session.items)


@dataclass
class ClusterHandle:
    """The cluster the session runs against."""

    kubeconfig: Path
    external: bool
    kubectl: Path | None
    info: Any = None  # localcluster.ClusterInfo when we run the local control plane
    cluster: Any = None  # the localcluster.LocalCluster behind it (images, the real node)


@pytest.fixture(scope="session")
def cluster_info(request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    external = os.environ.get("KUBETRAIN_TEST_KUBECONFIG")
    if external:
        path = Path(external).expanduser()
        if not path.is_file():
            pytest.fail(f"KUBETRAIN_TEST_KUBECONFIG={external} does not exist")
        kubectl = shutil.which("kubectl")
        yield ClusterHandle(path, True, Path(kubectl) if kubectl else None)
        return
    # CRDs go in before the controller-manager starts, so its garbage collector watches
    # TrainingJobs from the start (a CRD added later is picked up only after ~30-40 s).
    cluster = localcluster.LocalCluster(
        crds=CRD_PATH.parent if CRD_PATH.parent.is_dir() else None,
        node=wants_real_node(request.session),
    )
    try:
        info = cluster.up(build=True, tie_to_parent=True)
    except localcluster.ClusterError as e:
        pytest.fail(f"local cluster failed to start:\n{e}", pytrace=False)
    try:
        yield ClusterHandle(info.kubeconfig, False, info.kubectl, info, cluster)
    finally:
        if info.started:
            cluster.down()


@pytest.fixture(scope="session")
def kubeconfig_path(cluster_info: ClusterHandle) -> Path:
    return cluster_info.kubeconfig


def api_client_for(
    kubeconfig: Path, *, headers: dict[str, str] | None = None, token: str | None = None
) -> k8s.ApiClient:
    """An ApiClient from `kubeconfig`, optionally with extra headers or a bearer token only."""
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    if token is not None:
        cfg.cert_file = cfg.key_file = None  # authenticate with the token alone
        cfg.api_key = {"authorization": f"Bearer {token}"}
    api = k8s.ApiClient(cfg)
    for key, value in (headers or {}).items():
        api.set_default_header(key, value)
    return api


@pytest.fixture(scope="session")
def kube_api(kubeconfig_path: Path) -> Iterator[k8s.ApiClient]:
    """Admin ApiClient (system:masters on the local cluster)."""
    api = api_client_for(kubeconfig_path)
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubectl(cluster_info: ClusterHandle) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the pinned kubectl against the test cluster: ``kubectl("get", "tj", "-n", ns)``."""
    if cluster_info.kubectl is None or not cluster_info.kubectl.exists():
        pytest.skip("no kubectl binary (build it with e2e/build-tools.sh, or put one on PATH)")
    exe = str(cluster_info.kubectl)

    def run(
        *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [exe, f"--kubeconfig={cluster_info.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    return run


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"kt-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube_api: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, ready for pods (its default ServiceAccount exists)."""
    core = k8s.CoreV1Api(kube_api)
    name = _namespace_name(request.node.name)
    core.create_namespace({"metadata": {"name": name, "labels": {"kubetrain.io/test": "true"}}})

    def default_sa_exists() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    wait_until(default_sa_exists, timeout=30, what=f"ServiceAccount {name}/default")
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture
def sa_api_client(
    kubeconfig_path: Path, kube_api: k8s.ApiClient
) -> Iterator[Callable[..., k8s.ApiClient]]:
    """Factory: ``sa_api_client(namespace, name, mode="impersonate"|"token")`` -> ApiClient.

    "impersonate" sends the admin's requests with ``Impersonate-User:
    system:serviceaccount:<ns>:<name>`` (the API server adds the ServiceAccount groups), so RBAC
    is evaluated exactly as for that ServiceAccount. "token" logs in with a short-lived token
    from the TokenRequest API, which also exercises the service-account signing setup.
    """
    made: list[k8s.ApiClient] = []

    def make(namespace: str, name: str, mode: str = "impersonate") -> k8s.ApiClient:
        if mode == "impersonate":
            api = api_client_for(
                kubeconfig_path,
                headers={"Impersonate-User": f"system:serviceaccount:{namespace}:{name}"},
            )
        elif mode == "token":
            req = k8s.CoreV1Api(kube_api).create_namespaced_service_account_token(
                name, namespace, {"spec": {"expirationSeconds": 3600}}
            )
            api = api_client_for(kubeconfig_path, token=req.status.token)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


def raw_get(api: k8s.ApiClient, path: str, *, table: bool = False) -> Any:
    """GET `path` as parsed JSON; ``table=True`` asks for the server-side Table (printer cols)."""
    accept = TABLE_ACCEPT if table else "application/json"
    req = api.param_serialize(
        method="GET",
        resource_path=path,
        header_params={"Accept": accept},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*req)
    body = resp.read()
    if not 200 <= resp.status < 300:
        raise ApiException(status=resp.status, reason=resp.reason, body=body)
    return json.loads(body)


@pytest.fixture(scope="session")
def trainingjob_crd(kube_api: k8s.ApiClient) -> dict[str, Any]:
    """Install (create or replace) the TrainingJob CRD from crds/ and wait until Established."""
    assert CRD_PATH.is_file(), f"{CRD_PATH} is missing"
    crd = yaml.safe_load(CRD_PATH.read_text())
    ext = k8s.ApiextensionsV1Api(kube_api)
    name = crd["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as e:
        if e.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, crd)

    def established() -> bool:
        conds = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    wait_until(established, timeout=30, what=f"CRD {name} to be Established")
    return crd


@pytest.fixture(scope="session")
def gpu_pools(kube_api: k8s.ApiClient) -> dict[str, list[str]]:
    """Node names per ``kubetrain.io/pool`` label; skips when the simulated pools are absent."""
    nodes = k8s.CoreV1Api(kube_api).list_node(label_selector=localcluster.POOL_LABEL).items
    pools: dict[str, list[str]] = {}
    for node in nodes:
        pools.setdefault(node.metadata.labels[localcluster.POOL_LABEL], []).append(
            node.metadata.name
        )
    if not {"cpu", "a100", "h100"} <= set(pools):
        pytest.skip("the cluster has no kwok-simulated kubetrain.io/pool=cpu/a100/h100 nodes")
    return pools


@pytest.fixture(name="raw_get")
def raw_get_fixture() -> Callable[..., Any]:
    """`raw_get(api, path, table=False)`: a GET that the typed client cannot express."""
    return raw_get


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """The polling helper, for test modules (conftest is not importable from them)."""
    return wait_until
