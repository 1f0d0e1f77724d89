"""Pure builders: a TrainingJob's spec and the operator's config in, the desired child
objects out, as plain dicts ready for the API. No I/O and no kopf, so that every field of
every child is checked by table-driven unit tests.

One Ray cluster per job: a head pod (GCS, dashboard, the driver that runs Ray Data), one
worker pod per training worker, a Service in front of the head, a ConfigMap holding the
spec that the runtime entrypoint reads, and (unless the job brings its own) a
ServiceAccount whose only right is to patch this job's status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kubetrain.api.contract import (
    DASHBOARD_PORT_NAME,
    DATA_MOUNT,
    ENV_JOB_NAMESPACE,
    OUTPUT_MOUNT,
    cluster_output_uri,
    within_mount,
)
from kubetrain.api.raynode import (
    NODE_GUARD,
    STARTUP_CONCURRENCY_ENV,
    RayNodeResources,
    head_node,
    worker_node,
)
from kubetrain.api.v1alpha1 import (
    API_VERSION,
    DRIVER_LOG_KEY,
    GROUP,
    KIND,
    PLURAL,
    STORAGE_SECRET_KEYS,
    ClusterSpec,
    StorageSpec,
    Toleration,
    TrainingJobSpec,
    is_object_store,
)

from .actions import Event
from .config import OperatorConfig
from .naming import (
    ANNOTATION_TEMPLATE,
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    KUEUE_GROUP_SIZE,
    KUEUE_POD_GROUP,
    KUEUE_QUEUE,
    LABEL_JOB_UID,
    LABEL_ROLE,
    ROLE_HEAD,
    ROLE_WORKER,
    SPEC_FILE,
    JobRef,
)
from .validation import Placement

API_DEFAULT_IMAGE = ClusterSpec.model_fields["image"].default
#: The dashboard agent's port: the workers' readiness probe asks their raylet through it.
AGENT_PORT = 52365
VOLCANO_API = "scheduling.volcano.sh/v1beta1"
#: The annotation by which Volcano finds a pod's PodGroup.
VOLCANO_GROUP = "scheduling.k8s.io/group-name"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Children:
    """Everything one job owns. ``setup`` objects are created before any pod, so that the
    pods find their ConfigMap, ServiceAccount and the head Service's env vars."""

    config_map: Obj
    service: Obj
    head: Obj
    workers: tuple[Obj, ...]
    runtime_rbac: tuple[Obj, ...]
    pod_group: Obj | None = None  # Volcano's gang, when the pool uses it

    @property
    def setup(self) -> tuple[Obj, ...]:
        group = (self.pod_group,) if self.pod_group else ()
        return (self.config_map, *self.runtime_rbac, self.service, *group)

    @property
    def setup_waves(self) -> tuple[tuple[Obj, ...], ...]:
        """Setup objects in creation order: the API server checks a RoleBinding against
        the rules of its Role (no privilege escalation), so the Role must exist first. The
        pods come after the last wave (reconcile.py says why)."""
        bindings = tuple(o for o in self.setup if o["kind"] == "RoleBinding")
        rest = tuple(o for o in self.setup if o["kind"] != "RoleBinding")
        return (rest, bindings) if bindings or self.pod_group else (rest,)

    @property
    def pods(self) -> tuple[Obj, ...]:
        return (self.head, *self.workers)


def build_children(
    job: JobRef, spec: TrainingJobSpec, placement: Placement, config: OperatorConfig
) -> Children:
    """The desired children of a job that passed validation."""
    rbac = runtime_rbac(job) if _uses_runtime_account(spec, config) else ()
    return Children(
        config_map=spec_config_map(job, spec, config),
        service=head_service(job),
        head=head_pod(job, spec, placement, config),
        workers=tuple(
            worker_pod(job, spec, placement, config, index)
            for index in range(spec.training.workers)
        ),
        runtime_rbac=rbac,
        pod_group=volcano_pod_group(job, spec, placement),
    )


def volcano_pod_group(job: JobRef, spec: TrainingJobSpec, placement: Placement) -> Obj | None:
    """Volcano schedules the head and every worker together or not at all."""
    if placement.volcano_queue is None:
        return None
    group: Obj = {"minMember": 1 + spec.training.workers, "queue": placement.volcano_queue}
    if spec.cluster.priorityClassName:
        group["priorityClassName"] = spec.cluster.priorityClassName
    return {
        "apiVersion": VOLCANO_API,
        "kind": "PodGroup",
        "metadata": _metadata(job, job.cluster, "pod-group"),
        "spec": group,
    }


def expected_pod_names(job: JobRef, spec: TrainingJobSpec) -> tuple[str, ...]:
    """Names of the pods a complete cluster has, head first."""
    return (job.head_pod, *(job.worker_pod(i) for i in range(spec.training.workers)))


# ------------------------------------------------------------------- metadata


def _metadata(job: JobRef, name: str, component: str, **extra_labels: str) -> Obj:
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": {**job.labels(component), **extra_labels},
        "ownerReferences": [job.owner_reference()],
    }


#: The end of a driver log that a ConfigMap keeps (ConfigMaps hold at most 1 MiB); the
#: whole log is on the output location (``status.artifacts.logUri``).
DRIVER_LOG_LIMIT = 512 * 1024


def driver_log_config_map(job: JobRef, log: str) -> Obj:
    """The driver log's last ``DRIVER_LOG_LIMIT`` bytes, owned by the job: it outlives the
    Ray cluster and goes with the job."""
    encoded = log.encode()
    if len(encoded) > DRIVER_LOG_LIMIT:
        cut = encoded[-DRIVER_LOG_LIMIT:].decode(errors="ignore")
        log = f"[... the first {len(encoded) - DRIVER_LOG_LIMIT} bytes are cut]\n{cut}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, job.driver_log_config_map, "driver-log"),
        "data": {DRIVER_LOG_KEY: log},
    }


def output_claim(spec: TrainingJobSpec, config: OperatorConfig) -> str | None:
    """The PVC mounted at /output in every Ray pod: the job's own, else the admin's, which
    a job writing to an object store does not need (a volume that can only be attached on
    some nodes would still bind its pods to those nodes)."""
    if spec.output.volumeClaim:
        return spec.output.volumeClaim
    if spec.output.uri and is_object_store(spec.output.uri):
        return None
    return config.outputVolume or None


def shared_storage_problem(spec: TrainingJobSpec, config: OperatorConfig) -> str | None:
    """Why this job's checkpoints and outputs would live on one pod's own disk (a head
    and at least one worker make every job multi-pod), or None when they are shared."""
    uri = spec.output.uri
    if uri and is_object_store(uri):
        return None
    claim = output_claim(spec, config)
    if claim and (not uri or within_mount(uri, OUTPUT_MOUNT)):
        return None
    if claim:
        return (
            f"spec.output.uri {uri!r} is outside {OUTPUT_MOUNT}, where the volume "
            f"{claim!r} is mounted: checkpoints and outputs stay on one pod's disk"
        )
    return (
        "no shared storage: checkpoints and outputs stay on one pod's disk and are lost "
        "with it; set spec.output.uri to an object store (s3://...) or "
        "spec.output.volumeClaim to a PersistentVolumeClaim (or the operator's "
        "runtime.outputVolume)"
    )


def runtime_spec_document(job: JobRef, spec: TrainingJobSpec, config: OperatorConfig) -> Obj:
    """The TrainingJob as the runtime reads it: the same schema as the CR, with the
    output location filled in when the job has a shared volume."""
    body = spec.model_dump(mode="json", exclude_none=True)
    if output_claim(spec, config) and not spec.output.uri:
        body["output"]["uri"] = cluster_output_uri(job.namespace, job.cluster)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job.name, "namespace": job.namespace, "uid": job.uid},
        "spec": body,
    }


def spec_config_map(job: JobRef, spec: TrainingJobSpec, config: OperatorConfig) -> Obj:
    document = runtime_spec_document(job, spec, config)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, job.spec_config_map, "spec"),
        # JSON is YAML, and orjson dumps it far faster than PyYAML or json with indent (both
        # pure Python; each showed in profiles at a thousand jobs).
        "data": {SPEC_FILE: orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"},
    }


def head_service(job: JobRef) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, job.head_service, "ray-head"),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_JOB_UID: job.uid, LABEL_ROLE: ROLE_HEAD},
            "ports": [
                {"name": "gcs", "port": GCS_PORT, "targetPort": GCS_PORT},
                {"name": DASHBOARD_PORT_NAME, "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT},
                {"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
            ],
        },
    }


def _uses_runtime_account(spec: TrainingJobSpec, config: OperatorConfig) -> bool:
    return config.createRuntimeRbac and spec.cluster.serviceAccountName is None


def runtime_rbac(job: JobRef) -> tuple[Obj, Obj, Obj]:
    """ServiceAccount + Role + RoleBinding: get and patch this job's status, nothing else
    (``resourceNames`` pins it to the one object)."""
    name = job.runtime_account
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(job, name, "runtime"),
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(job, name, "runtime"),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [job.name],
                "verbs": ["get", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(job, name, "runtime"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}],
    }
    return account, role, binding


# ----------------------------------------------------------------------- pods


def image_of(spec: TrainingJobSpec, config: OperatorConfig) -> str:
    """The job's image; the API's placeholder default is replaced by the admin's mirror."""
    if spec.cluster.image == API_DEFAULT_IMAGE and config.defaultImage:
        return config.defaultImage
    return spec.cluster.image


def _service_host_env(job: JobRef) -> str:
    """The variable the kubelet injects for the head Service (no cluster DNS needed)."""
    return job.head_service.upper().replace("-", "_") + "_SERVICE_HOST"


def _pod_security(config: OperatorConfig) -> Obj:
    sec = config.podSecurity
    if not sec.restricted:
        return {}
    context: Obj = {
        "runAsNonRoot": True,
        "runAsUser": sec.runAsUser,
        "runAsGroup": sec.runAsGroup,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sec.fsGroup is not None:
        context["fsGroup"] = sec.fsGroup
    return context


def _container_security(config: OperatorConfig) -> Obj:
    if not config.podSecurity.restricted:
        return {}
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(job: JobRef, config: OperatorConfig, spec: TrainingJobSpec) -> list[Obj]:
    return [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},
        # The head Service is cluster-internal and the operator talks to the dashboard
        # itself; per-job Ray tokens would need a Secret per job for no gain here.
        {"name": "RAY_AUTH_MODE", "value": "disabled"},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": ENV_JOB_NAMESPACE, "value": job.namespace},
        *storage_env(spec.storage),
    ]


def storage_env(storage: StorageSpec) -> list[Obj]:
    """The object store's endpoint, region and credentials, as the variables every AWS SDK
    (and s3fs) reads. Credentials come by reference to the spec's Secret: the kubelet reads
    it, so neither the operator nor the job's own objects ever hold a copy."""
    env: list[Obj] = []
    if storage.secretName:
        for key in STORAGE_SECRET_KEYS:
            ref = {"name": storage.secretName, "key": key}
            if key == "AWS_SESSION_TOKEN":
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": storage.endpoint})
    if storage.region:
        env += [{"name": name, "value": storage.region}
                for name in ("AWS_REGION", "AWS_DEFAULT_REGION")]  # fmt: skip
    return env


def _toleration(t: Toleration) -> Obj:
    return t.model_dump(exclude_none=True)


def claim_volumes_of(spec: TrainingJobSpec, config: OperatorConfig) -> tuple[list[Obj], list[Obj]]:
    """The mounts and volumes of the outputs claim (at /output) and the data claim
    (read-only at /data: a job cannot change its own inputs). When both name one claim it
    is one volume mounted twice: two volumes on one PersistentVolume are one volume to the
    kubelet, which then mounted both read-only and the job could not write its outputs."""
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    claim = output_claim(spec, config)
    if claim:
        mounts.append({"name": "output", "mountPath": OUTPUT_MOUNT})
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": claim}})
    data_claim = spec.data.volumeClaim
    if data_claim and data_claim == claim:
        mounts.append({"name": "output", "mountPath": DATA_MOUNT, "readOnly": True})
    elif data_claim:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": data_claim, "readOnly": True}})  # fmt: skip
    return mounts, volumes


def _pod(
    job: JobRef,
    spec: TrainingJobSpec,
    placement: Placement,
    config: OperatorConfig,
    *,
    name: str,
    role: str,
    command: str,
    resources: Obj,
    ports: list[Obj],
    probe: Obj,
    node: RayNodeResources,
) -> Obj:
    cluster = spec.cluster
    uses_runtime_account = _uses_runtime_account(spec, config)
    volume_mounts = [
        {"name": "spec", "mountPath": config.specMountPath, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[Obj] = [
        {"name": "spec", "configMap": {"name": job.spec_config_map}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    claim_mounts, claim_volumes = claim_volumes_of(spec, config)
    volume_mounts += claim_mounts
    volumes += claim_volumes
    container: Obj = {
        "name": f"ray-{role}",
        "image": image_of(spec, config),
        "imagePullPolicy": cluster.imagePullPolicy,
        "command": ["/bin/sh", "-c", command],
        "env": [
            *_env(job, config, spec),
            {"name": STARTUP_CONCURRENCY_ENV, "value": str(node.startup_concurrency())},
        ],
        "ports": ports,
        "resources": resources,
        "readinessProbe": probe,
        "volumeMounts": volume_mounts,
    }
    security = _container_security(config)
    if security:
        container["securityContext"] = security
    pod_spec: Obj = {
        # A Ray node restarted in place is a new node (a restarted head, a new cluster):
        # a pod that exits stays Failed, with its reason, and the operator decides.
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": True,
        "terminationGracePeriodSeconds": 30,
    }
    pod_security = _pod_security(config)
    if pod_security:
        pod_spec["securityContext"] = pod_security
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [_toleration(t) for t in placement.tolerations]
    if cluster.priorityClassName:
        pod_spec["priorityClassName"] = cluster.priorityClassName
    if placement.volcano_queue is not None:
        pod_spec["schedulerName"] = "volcano"
    if cluster.serviceAccountName:
        pod_spec["serviceAccountName"] = cluster.serviceAccountName
    elif uses_runtime_account:
        pod_spec["serviceAccountName"] = job.runtime_account
    else:
        pod_spec["automountServiceAccountToken"] = False
    if config.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in config.imagePullSecrets]
    metadata = _metadata(job, name, f"ray-{role}", **{LABEL_ROLE: role})
    metadata["annotations"] = {ANNOTATION_TEMPLATE: template_hash(pod_spec)}
    if placement.volcano_queue is not None:
        metadata["annotations"][VOLCANO_GROUP] = job.cluster
    if job.queue:
        # Kueue admits the head and every worker together, or none (a plain-pod group);
        # until then its webhook holds the pods with a scheduling gate.
        metadata["labels"] |= {KUEUE_QUEUE: job.queue, KUEUE_POD_GROUP: job.cluster}
        metadata["annotations"][KUEUE_GROUP_SIZE] = str(1 + spec.training.workers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def template_hash(pod_spec: Obj) -> str:
    """A short, stable digest of a pod spec (key order does not matter)."""
    canonical = json.dumps(pod_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def pod_templates(children: Children) -> dict[str, str]:
    """Pod name → template hash of a build, what ``status.decide`` compares pods with."""
    return {p["metadata"]["name"]: p["metadata"]["annotations"][ANNOTATION_TEMPLATE]
            for p in children.pods}  # fmt: skip


def _resources(requests: dict[str, str], placement: Placement) -> Obj:
    """Limits equal to the requests (Guaranteed QoS), but for CPU in a pool that lets its
    pods burst: Ray advertises the request either way (``ray_start_flags``)."""
    limits = dict(requests) if placement.cpu_limit else {
        k: v for k, v in requests.items() if k != "cpu"
    }  # fmt: skip
    return {"requests": dict(requests), "limits": limits}


def head_pod(
    job: JobRef, spec: TrainingJobSpec, placement: Placement, config: OperatorConfig
) -> Obj:
    res = spec.cluster.head.resources
    limits = {"cpu": str(res.cpu), "memory": str(res.memory)}
    node = head_node(res)
    command = (
        f"exec {NODE_GUARD} ray start --head --block --disable-usage-stats"
        ' --node-ip-address="$POD_IP"'
        f" --port={GCS_PORT} --dashboard-host=0.0.0.0 --dashboard-port={DASHBOARD_PORT}"
        f" --dashboard-agent-listen-port={AGENT_PORT}"
        f" {node.ray_start_flags()}"
    )
    return _pod(
        job,
        spec,
        placement,
        config,
        name=job.head_pod,
        role=ROLE_HEAD,
        command=command,
        resources=_resources(limits, placement),
        ports=[
            {"name": "gcs", "containerPort": GCS_PORT},
            {"name": DASHBOARD_PORT_NAME, "containerPort": DASHBOARD_PORT},
            {"name": "client", "containerPort": CLIENT_PORT},
        ],
        probe=_http_probe("/api/gcs_healthz", DASHBOARD_PORT),
        node=node,
    )


def worker_pod(
    job: JobRef,
    spec: TrainingJobSpec,
    placement: Placement,
    config: OperatorConfig,
    index: int,
) -> Obj:
    res = spec.training.resourcesPerWorker
    limits: dict[str, str] = {"cpu": str(res.cpu), "memory": str(res.memory)}
    if res.gpu:
        limits[placement.gpu_resource] = str(res.gpu)
    host = f"${{{_service_host_env(job)}:-{job.head_service}.{job.namespace}.svc}}"
    node = worker_node(res)
    command = (
        f"exec {NODE_GUARD} ray start --block --disable-usage-stats"
        f' --address="{host}:{GCS_PORT}" --node-ip-address="$POD_IP"'
        f" --dashboard-agent-listen-port={AGENT_PORT}"
        f" {node.ray_start_flags()}"
    )
    return _pod(
        job,
        spec,
        placement,
        config,
        name=job.worker_pod(index),
        role=ROLE_WORKER,
        command=command,
        resources=_resources(limits, placement),
        ports=[{"name": "agent", "containerPort": AGENT_PORT}],
        probe=_http_probe("/api/local_raylet_healthz", AGENT_PORT),
        node=node,
    )


#: Readiness is probed every second: the job is submitted when every Ray pod is Ready, so
#: a 5 s period cost up to 5 s of every start. A pod goes unready after 30 s of failures.
PROBE_PERIOD_SECONDS = 1
PROBE_TOLERANCE_SECONDS = 30


def _http_probe(path: str, port: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "initialDelaySeconds": 1,
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "timeoutSeconds": 3,
        "failureThreshold": PROBE_TOLERANCE_SECONDS // PROBE_PERIOD_SECONDS,
    }


# ------------------------------------------------------------------ the Ray job


def entrypoint(config: OperatorConfig) -> str:
    """The driver command Ray runs on the head: the runtime reads the mounted spec."""
    return (
        "python -m kubetrain_runtime.entrypoint"
        f" --spec {config.specMountPath}/{SPEC_FILE} --reporter {config.runtimeReporter}"
    )


def submission_request(job: JobRef, attempt: int, config: OperatorConfig) -> Obj:
    """Body of Ray's ``POST /api/jobs/``. The metadata is for people reading Ray's job
    list; the runtime finds a retry's checkpoint on the output location, not from here."""
    return {
        "entrypoint": entrypoint(config),
        "submission_id": job.submission_id(attempt),
        "metadata": {
            "kubetrain.io/job": job.name,
            "kubetrain.io/namespace": job.namespace,
            "kubetrain.io/attempt": str(attempt),
        },
    }


#: Kubernetes keeps an Event's message short; longer ones are cut, not refused.
EVENT_MESSAGE_LIMIT = 1024


#: Annotation of an Event: the digest of the job state that the transition was decided from.
ANNOTATION_DECIDED_FROM = "kubetrain.io/decided-from"


def decision_basis(body: Mapping[str, Any]) -> str:
    """What a look decides from, as a short digest: the spec's generation and the stored
    status. Not the resourceVersion: writes that change neither (kopf's own annotations and
    finalizers after a restart) would make a repeated look post its Events again."""
    status = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    basis = {"generation": body.get("metadata", {}).get("generation"), "status": status}
    encoded = json.dumps(basis, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def event_name(job: JobRef, decided_from: str, reason: str) -> str:
    """The same name for the same decision: a look that an operator restart repeats (the
    job unchanged, so the same version decides the same) posts no second Event (409)."""
    digest = hashlib.sha256(f"{job.uid}/{decided_from}/{reason}".encode()).hexdigest()
    return f"{job.name}.{digest[:16]}"


def event_object(
    job: JobRef,
    event: Event,
    *,
    component: str,
    instance: str,
    when: str,
    decided_from: str | None = None,
) -> Obj:
    """A core/v1 Event about the job (what ``kubectl describe`` and ``kubectl events``
    show). Posted by the operator's own client: kopf's event poster costs more per Event.
    With `decided_from` (:func:`decision_basis`) its name is derived, not generated."""
    message = event.message
    if len(message) > EVENT_MESSAGE_LIMIT:
        message = message[: EVENT_MESSAGE_LIMIT - 3] + "..."
    meta: Obj = {"generateName": f"{job.name}.", "namespace": job.namespace}
    if decided_from is not None:
        meta = {
            "name": event_name(job, decided_from, event.reason),
            "namespace": job.namespace,
            "annotations": {ANNOTATION_DECIDED_FROM: decided_from},
        }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta,
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": job.name,
            "namespace": job.namespace,
            "uid": job.uid,
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }
