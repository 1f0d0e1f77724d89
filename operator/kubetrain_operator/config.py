"""The operator's own configuration, written by the cluster admin (the Helm chart renders it
into a ConfigMap): the node-pool catalogue, pod defaults, which namespaces to watch, and how
to reach Ray.

Users name a pool (``spec.cluster.nodePool: a100``); everything that makes a pod land on
that hardware lives here, so that a TrainingJob stays short and portable between clusters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from kubetrain.api import kubeyaml
from kubetrain.api.grammar import (
    DnsLabel,
    DnsSubdomain,
    ExtendedResourceName,
    ImageReference,
    LabelKey,
    LabelValue,
)
from kubetrain.api.manifests import FieldError, errors_of
from kubetrain.api.v1alpha1 import Toleration
from kubetrain.errors import UserError

#: Environment variable naming the YAML file to read (the chart mounts its ConfigMap there).
CONFIG_ENV = "KUBETRAIN_OPERATOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/kubetrain-operator/config.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodePool(_Model):
    """One kind of node a job can ask for by name."""

    nodeSelector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Node labels the pool's Ray pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints of the pool's nodes that its Ray pods tolerate."
    )
    gpu: bool = Field(False, description="Whether the pool's nodes have GPUs.")
    gpuResource: ExtendedResourceName = Field(
        "nvidia.com/gpu", description="Extended resource name of a GPU."
    )
    gpusPerNode: int | None = Field(
        None, ge=1, description="GPUs of one node, when known: larger asks fail validation."
    )
    gangScheduler: Literal["none", "volcano"] = Field(
        "none",
        description="volcano: the pool's pods are scheduled by Volcano as one gang (a PodGroup "
        "per job with minMember = head + workers), so a job never holds part of the GPUs.",
    )
    volcanoQueue: str = Field("default", min_length=1, description="Volcano queue of the gangs.")
    cpuLimit: bool = Field(
        True,
        description="true: each Ray pod's CPU limit is its request (Guaranteed QoS, as KubeRay "
        "advises). false: the request only, so a pod may use its node's idle CPUs (Burstable; "
        "Ray still schedules by the request), e.g. for a shared CPU pool.",
    )


class PodSecurity(_Model):
    """Security context of the Ray pods; the defaults pass the restricted Pod Security
    Standard. Turning ``restricted`` off is an explicit admin decision."""

    restricted: bool = True
    runAsUser: int = Field(1000, ge=1)
    runAsGroup: int = Field(1000, ge=0)
    fsGroup: int | None = Field(1000, ge=0)


class RayAccess(_Model):
    """How the operator reaches each job's Ray dashboard (job submission API)."""

    mode: Literal["auto", "service", "proxy"] = Field(
        "auto",
        description="service: the head Service's DNS name (operator runs in the cluster); "
        "proxy: through the API server's service proxy (operator runs outside); auto: "
        "service when a service-account token is mounted, else proxy.",
    )
    submit: bool = Field(
        True,
        description="Submit the training job once the cluster is ready. Off only for test "
        "clusters without real pods (kwok): jobs then stop at Provisioning.",
    )
    authToken: str | None = Field(None, description="Ray dashboard token, when Ray auth is on.")
    requestTimeoutSeconds: float = Field(10, gt=0)


class OperatorConfig(_Model):
    """Everything an admin can set. Every field has a default, so an empty file works."""

    nodePools: dict[DnsLabel, NodePool] = Field(
        default_factory=lambda: {"cpu": NodePool(nodeSelector={"kubetrain.io/pool": "cpu"})},
        description="Pools by the name jobs give in spec.cluster.nodePool (so: DNS labels).",
    )
    defaultNodePool: DnsLabel | None = Field(
        None,
        description="Pool (a key of nodePools) for jobs that name none; unset means no node "
        "constraints.",
    )
    defaultImage: ImageReference | None = Field(
        None, description="Image for jobs that keep the API's default image (a local mirror)."
    )
    imagePullSecrets: list[DnsSubdomain] = Field(
        default_factory=list, description="Secrets (by name) the Ray pods pull images with."
    )
    podSecurity: PodSecurity = Field(default_factory=PodSecurity)
    namespaces: list[DnsLabel] = Field(
        default_factory=list,
        description="Namespaces to watch, by name (no patterns: each gets its own Role and pod "
        "watch); empty means all (cluster-wide).",
    )
    ray: RayAccess = Field(default_factory=RayAccess)
    followIntervalSeconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="A running job's Ray state is read at least this often. Changes of a "
        "job or its pods, and deadlines, are acted on when they happen, not on this clock.",
    )
    concurrentProvisions: int = Field(
        128,
        ge=1,
        le=1024,
        description="Jobs that create their Ray clusters' objects at the same time; under a "
        "burst the others wait their turn, so each job is provisioned sooner.",
    )
    specMountPath: str = "/etc/kubetrain"
    runtimeReporter: str = Field(
        "log,status",
        description="Reporters of the runtime entrypoint (--reporter): status patches live "
        "progress into the job's status; log prints the final results that the operator "
        "reads back from the Ray job's logs.",
    )
    createRuntimeRbac: bool = Field(
        True,
        description="Give each job's pods a ServiceAccount that may patch only that job's "
        "status (for the status reporter).",
    )
    metricsPort: int = Field(8080, ge=0, le=65535, description="Prometheus port; 0 = off.")
    peeringName: DnsSubdomain | None = Field(
        None,
        description="kopf peering object (kopf.dev); unset means standalone (one replica). "
        "With peering, of operators following the same jobs only the highest priority acts.",
    )
    peeringPriority: int = Field(0, description="This operator's kopf peering priority.")
    outputVolume: DnsSubdomain | None = Field(
        None,
        description="A PersistentVolumeClaim mounted at /output in every Ray pod, for jobs "
        "whose spec.output.uri is unset.",
    )

    @field_validator("defaultNodePool")
    @classmethod
    def _default_pool_is_offered(cls, name: str | None, info: ValidationInfo) -> str | None:
        """Checked here, once, so that a job which names no pool is never told that the
        pool it did not name is unknown."""
        pools = info.data.get("nodePools")
        if name is not None and pools is not None and name not in pools:
            offered = ", ".join(sorted(pools)) or "none"
            raise ValueError(f"{name!r} is not a key of nodePools (offered: {offered})")
        return name


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> OperatorConfig:
    """Read the config from ``path``, else ``$KUBETRAIN_OPERATOR_CONFIG``, else the chart's
    mount point (a missing default file means all defaults, handy for development); then
    apply ``overrides`` (command-line flags), validating the result as a whole.

    Every problem is a :class:`UserError` of one line that names where the value came from
    (the file, or the command line for an override) and the field: it is the admin's to fix,
    and the operator refuses to start rather than blame jobs for it later."""
    explicit = path or os.environ.get(CONFIG_ENV)
    file = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    if not file.exists() and explicit:
        raise UserError("operator config file not found", field=str(file))
    data = _read_mapping(file) if file.exists() else {}
    try:
        return OperatorConfig.model_validate({**data, **(overrides or {})})
    except ValidationError as exc:
        raise _config_error(errors_of(exc), str(file), set(overrides or {})) from None


def _config_error(problems: list[FieldError], file: str, flags: set[str]) -> UserError:
    """One line: the file's problems and the flags' problems, each named by its source."""
    from_flags = [p for p in problems if _top_field(p) in flags]
    from_file = [p for p in problems if p not in from_flags]
    sources = [
        (src, errs) for src, errs in ((file, from_file), ("command line", from_flags)) if errs
    ]
    if len(sources) == 1:
        ((source, errs),) = sources
        return UserError(f"invalid operator config: {_join(errs)}", field=source)
    return UserError("; ".join(f"{src}: invalid operator config: {_join(e)}" for src, e in sources))


def _read_mapping(file: Path) -> dict[str, Any]:
    """The file's YAML mapping, read as kubectl and helm read YAML (``kubeyaml``: a key given
    twice is an error); an unreadable file or bad YAML is one line naming the file (and the
    line, where YAML knows it)."""
    try:
        docs = list(kubeyaml.load_documents(file.read_text()))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"cannot read operator config: {reason}", field=str(file)) from None
    except kubeyaml.KubeYamlError as exc:
        where = f"{file}:{exc.line}" if exc.line else str(file)
        raise UserError(f"invalid operator config: {exc}", field=where) from None
    if not docs:
        return {}
    if len(docs) > 1 or not isinstance(docs[0].value, dict):
        raise UserError(
            "invalid operator config: must be a YAML mapping (one document)", field=str(file)
        )
    return docs[0].value


def _top_field(problem: FieldError) -> str:
    return problem.path.split(".", 1)[0].split("[", 1)[0]


def _join(problems: list[FieldError]) -> str:
    return "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)
