"""Pure builders: every child of a job, checked field by field, table-driven."""

from __future__ import annotations

import pytest
import yaml

from kubetrain.api.raynode import whole_cpus
from kubetrain.api.v1alpha1 import MAX_NAME_LENGTH, TrainingJob
from kubetrain_operator import builders
from kubetrain_operator.naming import JobRef
from kubetrain_operator.validation import resolve_placement

pytestmark = pytest.mark.unit


def children(job, spec, config):
    return builders.build_children(job, spec, resolve_placement(spec, config), config)


@pytest.mark.parametrize(
    ("pool", "gpus", "selector", "tolerations", "gpu_limit"),
    [
        ("cpu", 0, {"kubetrain.io/pool": "cpu"}, None, None),
        ("a100", 2, {"kubetrain.io/pool": "a100"}, ["nvidia.com/gpu"], ("nvidia.com/gpu", "2")),
        ("a100", 0, {"kubetrain.io/pool": "a100"}, ["nvidia.com/gpu"], None),
        ("amd", 1, {"kubetrain.io/pool": "amd"}, None, ("amd.com/gpu", "1")),
        (None, 0, None, None, None),
    ],
)
def test_pool_placement_and_gpu_resources(
    job, make_spec, make_config, pool, gpus, selector, tolerations, gpu_limit
):
    spec = make_spec(cluster__nodePool=pool, training__resourcesPerWorker={"gpu": gpus, "cpu": "2"})
    kids = children(job, spec, make_config())
    for pod in kids.pods:
        assert pod["spec"].get("nodeSelector") == selector
        keys = [t.get("key") for t in pod["spec"].get("tolerations", [])] or None
        assert keys == tolerations
    limits = kids.workers[0]["spec"]["containers"][0]["resources"]["limits"]
    head_limits = kids.head["spec"]["containers"][0]["resources"]["limits"]
    if gpu_limit:
        assert limits[gpu_limit[0]] == gpu_limit[1]
    assert set(limits) - {"cpu", "memory"} == ({gpu_limit[0]} if gpu_limit else set())
    assert set(head_limits) == {"cpu", "memory"}, "the head never asks for GPUs"
    assert kids.workers[0]["spec"]["containers"][0]["resources"]["requests"] == limits


def test_a_pool_without_cpu_limits_lets_pods_burst_but_ray_counts_the_request(
    job, make_spec, make_config
):
    config = make_config()
    pools = {**config.nodePools}
    pools["cpu"] = pools["cpu"].model_copy(update={"cpuLimit": False})
    config = config.model_copy(update={"nodePools": pools})
    spec = make_spec(cluster__nodePool="cpu", training__resourcesPerWorker={"cpu": "2"})
    for pod in children(job, spec, config).pods:
        resources = pod["spec"]["containers"][0]["resources"]
        assert "cpu" in resources["requests"] and "cpu" not in resources["limits"]
        assert resources["limits"]["memory"] == resources["requests"]["memory"]
    worker = children(job, spec, config).workers[0]["spec"]["containers"][0]
    assert "--num-cpus=2" in " ".join(worker["command"] + worker.get("args", []))


def test_spec_selector_and_tolerations_add_to_the_pools(job, make_spec, make_config):
    spec = make_spec(
        cluster__nodePool="a100",
        cluster__nodeSelector={"zone": "b"},
        cluster__tolerations=[{"key": "team", "operator": "Equal", "value": "x"}],
    )
    pod = children(job, spec, make_config()).head
    assert pod["spec"]["nodeSelector"] == {"kubetrain.io/pool": "a100", "zone": "b"}
    assert [t["key"] for t in pod["spec"]["tolerations"]] == ["nvidia.com/gpu", "team"]


@pytest.mark.parametrize("workers", [1, 3])
def test_one_worker_pod_per_training_worker(job, make_spec, make_config, workers):
    kids = children(job, make_spec(training__workers=workers), make_config())
    assert [p["metadata"]["name"] for p in kids.pods] == [
        "iris-3f2a9-head",
        *(f"iris-3f2a9-worker-{i}" for i in range(workers)),
    ]
    assert builders.expected_pod_names(job, make_spec(training__workers=workers)) == tuple(
        p["metadata"]["name"] for p in kids.pods
    )


def test_every_child_is_owned_and_labelled(job, make_spec, make_config):
    kids = children(job, make_spec(), make_config())
    objects = [*kids.setup, *kids.pods]
    assert {o["kind"] for o in objects} == {
        "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service", "Pod",
    }  # fmt: skip
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubetrain.io/v1alpha1",
                "kind": "TrainingJob",
                "name": "iris",
                "uid": job.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels["kubetrain.io/job"] == "iris"
        assert labels["kubetrain.io/job-uid"] == job.uid
        assert labels["app.kubernetes.io/managed-by"] == "kubetrain-operator"
        assert labels["app.kubernetes.io/instance"] == "iris"
        assert labels["app.kubernetes.io/name"] == "kubetrain"


def test_names_fit_and_change_with_the_uid(make_spec, make_config):
    longest = "a" * MAX_NAME_LENGTH
    spec = make_spec(training__workers=1024)
    first = children(JobRef(longest, "ns", "abcde-1"), spec, make_config())
    again = children(JobRef(longest, "ns", "fedcb-2"), spec, make_config())
    for a, b in zip([*first.setup, *first.pods], [*again.setup, *again.pods], strict=True):
        assert len(a["metadata"]["name"]) <= 63
        assert a["metadata"]["name"] != b["metadata"]["name"], "recreated jobs must not collide"


def test_pods_pass_the_restricted_pod_security_standard(job, make_spec, make_config):
    for pod in children(job, make_spec(), make_config()).pods:
        sec = pod["spec"]["securityContext"]
        assert sec["runAsNonRoot"] is True and sec["runAsUser"] > 0
        assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["spec"]["containers"]:
            csec = container["securityContext"]
            assert csec["allowPrivilegeEscalation"] is False
            assert csec["capabilities"] == {"drop": ["ALL"]}
            assert csec["runAsNonRoot"] is True
        assert not any("hostPath" in v for v in pod["spec"]["volumes"])
        assert not pod["spec"].get("hostNetwork")


def test_object_store_credentials_reach_every_pod_by_reference_only(job, make_spec, make_config):
    spec = make_spec(storage={"secretName": "bucket-creds", "endpoint": "http://minio:9000",
                              "region": "eu-west-1"})  # fmt: skip
    built = children(job, spec, make_config())
    for pod in built.pods:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {
                "name": "bucket-creds", "key": key}}}  # fmt: skip
        token = env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token == {"name": "bucket-creds", "key": "AWS_SESSION_TOKEN", "optional": True}
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
        assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    # The operator neither reads nor copies the Secret: the kubelet resolves the reference.
    assert "Secret" not in {child["kind"] for child in [*built.setup, *built.pods]}
    plain = children(job, make_spec(), make_config()).head["spec"]["containers"][0]["env"]
    assert not any(e["name"].startswith("AWS_") for e in plain)


def test_a_data_claim_is_mounted_read_only_at_data(job, make_spec, make_config):
    spec = make_spec(
        data={"source": {"uri": {"path": "/data/images", "format": "images"}},
              "volumeClaim": "team-images"},
        model={"type": "cnn"},
    )  # fmt: skip
    for pod in children(job, spec, make_config()).pods:
        mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"] == {
            "claimName": "team-images", "readOnly": True}  # fmt: skip


def test_one_claim_for_data_and_outputs_is_one_volume_mounted_twice(job, make_spec, make_config):
    spec = make_spec(
        data={"source": {"uri": {"path": "/data/images", "format": "images"}},
              "volumeClaim": "shared"},
        model={"type": "cnn"}, output={"volumeClaim": "shared"},
    )  # fmt: skip
    for pod in children(job, spec, make_config()).pods:
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "output", "mountPath": "/output"} in mounts
        assert {"name": "output", "mountPath": "/data", "readOnly": True} in mounts
        claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [{"name": "output", "persistentVolumeClaim": {"claimName": "shared"}}]


def test_admin_can_turn_restricted_security_off(job, make_spec, make_config):
    config = make_config(podSecurity={"restricted": False})
    pod = children(job, make_spec(), config).head
    assert "securityContext" not in pod["spec"]
    assert "securityContext" not in pod["spec"]["containers"][0]


def test_head_service_exposes_gcs_dashboard_and_client(job, make_spec, make_config):
    svc = children(job, make_spec(), make_config()).service
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "gcs": 6379,
        "dashboard": 8265,
        "client": 10001,
    }
    assert svc["spec"]["selector"] == {"kubetrain.io/job-uid": job.uid, "kubetrain.io/role": "head"}


def test_runtime_rbac_may_only_patch_its_own_status(job, make_spec, make_config):
    kids = children(job, make_spec(), make_config())
    account, role, binding = kids.runtime_rbac
    assert role["rules"] == [
        {
            "apiGroups": ["kubetrain.io"],
            "resources": ["trainingjobs/status"],
            "resourceNames": ["iris"],
            "verbs": ["get", "patch"],
        }
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "team-a"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    for pod in kids.pods:
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize(
    ("spec_sa", "create_rbac", "expected_sa", "rbac_objects"),
    [
        ("mine", True, "mine", 0),
        (None, False, None, 0),
        (None, True, "iris-3f2a9-runtime", 3),
    ],
)
def test_service_account_choice(
    job, make_spec, make_config, spec_sa, create_rbac, expected_sa, rbac_objects
):
    kids = children(
        job,
        make_spec(cluster__serviceAccountName=spec_sa),
        make_config(createRuntimeRbac=create_rbac),
    )
    assert kids.head["spec"].get("serviceAccountName") == expected_sa
    assert len(kids.runtime_rbac) == rbac_objects
    if expected_sa is None:
        assert kids.head["spec"]["automountServiceAccountToken"] is False


def test_config_map_holds_a_valid_training_job(job, make_spec, make_config):
    kids = children(job, make_spec(), make_config(outputVolume="shared"))
    text = kids.config_map["data"]["trainingjob.yaml"]
    parsed = TrainingJob.model_validate(yaml.safe_load(text))
    assert parsed.metadata.name == "iris"
    assert parsed.spec.output.uri == "/output/team-a/iris-3f2a9"
    pod = kids.head["spec"]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "shared"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "spec", "mountPath": "/etc/kubetrain", "readOnly": True} in mounts


@pytest.mark.parametrize(
    ("spec_image", "default_image", "expected"),
    [
        (None, None, "kubetrain/runtime:0.1.0"),
        (None, "registry.local/kt:1", "registry.local/kt:1"),
        ("mine:2", "registry.local/kt:1", "mine:2"),
    ],
)
def test_image_choice(job, make_spec, make_config, spec_image, default_image, expected):
    spec = make_spec(cluster__image=spec_image) if spec_image else make_spec()
    kids = children(job, spec, make_config(defaultImage=default_image))
    assert {p["spec"]["containers"][0]["image"] for p in kids.pods} == {expected}


def test_ray_start_commands(job, make_spec, make_config):
    spec = make_spec(
        cluster__nodePool="a100",
        cluster__head={"resources": {"cpu": "2500m", "memory": "4Gi"}},
        training__resourcesPerWorker={"gpu": 1, "cpu": "3"},
    )
    kids = children(job, spec, make_config())
    head = kids.head["spec"]["containers"][0]["command"][-1]
    worker = kids.workers[0]["spec"]["containers"][0]["command"][-1]
    assert "--head" in head and "--num-cpus=2" in head and "--num-gpus=0" in head
    assert "--dashboard-port=8265" in head and "--port=6379" in head
    assert "--num-cpus=3" in worker and "--num-gpus=1" in worker
    assert "IRIS_3F2A9_HEAD_SERVICE_HOST:-iris-3f2a9-head.team-a.svc}:6379" in worker


@pytest.mark.parametrize(
    ("quantity", "cpus"), [("500m", 1), ("1", 1), ("2", 2), ("2500m", 2), ("4k", 4000), (3, 3)]
)
def test_whole_cpus(quantity, cpus):
    assert whole_cpus(quantity) == cpus


def test_submission_is_derived_from_uid_and_attempt(job, make_config):
    body = builders.submission_request(job, 3, make_config(runtimeReporter="status"))
    assert body["submission_id"] == f"kubetrain-{job.uid}-3"
    assert body["entrypoint"] == (
        "python -m kubetrain_runtime.entrypoint --spec /etc/kubetrain/trainingjob.yaml "
        "--reporter status"
    )
    assert body["metadata"]["kubetrain.io/attempt"] == "3"


def test_roles_are_created_before_their_bindings(job, make_spec, make_config):
    waves = children(job, make_spec(), make_config()).setup_waves
    assert [sorted(o["kind"] for o in wave) for wave in waves] == [
        ["ConfigMap", "Role", "Service", "ServiceAccount"],
        ["RoleBinding"],
    ]


def test_events_are_about_the_job_and_keep_kubernetes_limits(job):
    from kubetrain_operator.actions import Event

    long = Event("Warning", "Unschedulable", "0/6 nodes are available: " + "x" * 5000)
    body = builders.event_object(
        job, long, component="kubetrain-operator", instance="op-0", when="2026-01-01T00:00:00Z"
    )
    assert body["involvedObject"] == {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "name": job.name,
        "namespace": job.namespace,
        "uid": job.uid,
    }
    assert body["metadata"] == {"generateName": f"{job.name}.", "namespace": job.namespace}
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "Unschedulable", 1)
    assert len(body["message"]) == builders.EVENT_MESSAGE_LIMIT
    assert body["message"].endswith("...")
    assert body["reportingComponent"] == body["source"]["component"] == "kubetrain-operator"


def test_the_pod_template_hash_follows_the_pod_spec_only(job, make_spec, make_config):
    config = make_config()

    def templates(spec):
        placement = resolve_placement(spec, config)
        return builders.pod_templates(builders.build_children(job, spec, placement, config))

    base = templates(make_spec())
    assert base == templates(make_spec()), "stable across builds"
    assert len(set(base.values())) == 2, "head and workers differ; workers are alike"
    moved = templates(make_spec(cluster__nodePool="a100"))
    assert all(moved[name] != base[name] for name in base)
    head = make_spec(cluster__head__resources__cpu="2")
    assert templates(head)[job.head_pod] != base[job.head_pod]
    assert templates(head)[job.worker_pod(0)] == base[job.worker_pod(0)]


def test_a_queued_job_makes_its_pods_one_kueue_pod_group(job, make_spec, make_config):
    from kubetrain_operator.naming import JobRef

    spec, config = make_spec(training__workers=3), make_config()
    plain = builders.build_children(job, spec, resolve_placement(spec, config), config)
    assert not any("kueue.x-k8s.io/queue-name" in p["metadata"]["labels"] for p in plain.pods)

    queued = JobRef(job.name, job.namespace, job.uid, queue="gpu-team")
    kids = builders.build_children(queued, spec, resolve_placement(spec, config), config)
    assert len(kids.pods) == 4
    for pod in kids.pods:
        labels, notes = pod["metadata"]["labels"], pod["metadata"]["annotations"]
        assert labels["kueue.x-k8s.io/queue-name"] == "gpu-team"
        assert labels["kueue.x-k8s.io/pod-group-name"] == queued.cluster
        assert notes["kueue.x-k8s.io/pod-group-total-count"] == "4"
    assert builders.pod_templates(kids) == builders.pod_templates(plain), "spec unchanged"


@pytest.mark.parametrize("runtime_rbac", [True, False])
def test_a_volcano_pool_makes_one_pod_group_per_job(job, make_spec, make_config, runtime_rbac):
    from kubetrain_operator.config import NodePool

    config = make_config(createRuntimeRbac=runtime_rbac)
    config.nodePools["gang"] = NodePool(gangScheduler="volcano", volcanoQueue="research")
    spec = make_spec(training__workers=3, cluster__nodePool="gang")
    kids = builders.build_children(job, spec, resolve_placement(spec, config), config)
    group = kids.pod_group
    assert group is not None and group["kind"] == "PodGroup"
    assert group["spec"] == {"minMember": 4, "queue": "research"}
    assert group["metadata"]["ownerReferences"][0]["uid"] == job.uid
    first, *later = kids.setup_waves
    assert group in first, "the gang exists before any of its pods"
    assert later, "pods never go with the wave that creates their PodGroup"
    for pod in kids.pods:
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == job.cluster

    plain = make_spec(training__workers=3)
    assert (
        builders.build_children(job, plain, resolve_placement(plain, config), config).pod_group
        is None
    )


@pytest.mark.parametrize(
    ("worker_cpu", "head_cpu", "expected"), [("1", "1", (4, 4)), ("8", "500m", (8, 4))]
)
def test_ray_may_start_several_processes_at_once_on_every_pod(
    job, make_spec, make_config, worker_cpu, head_cpu, expected
):
    """Ray's default (the node's CPUs) started the head's actors one at a time: at least 4,
    more on a pod with more CPUs."""
    from kubetrain.api.raynode import STARTUP_CONCURRENCY_ENV

    spec = make_spec(training__resourcesPerWorker={"cpu": worker_cpu},
                     cluster__head={"resources": {"cpu": head_cpu}})  # fmt: skip
    kids = children(job, spec, make_config())

    def concurrency(pod: dict) -> int:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        return int(env[STARTUP_CONCURRENCY_ENV])

    assert (concurrency(kids.workers[0]), concurrency(kids.head)) == expected
    for pod in kids.pods:  # a pod's readiness is seen within a second
        assert pod["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] == 1
