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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kubetrain.api.manifests import errors_of
from kubetrain.api.v1alpha1 import Toleration
from kubetrain.errors import UserError

#: Environment variable naming the YAML file to read (the chart mounts its ConfigMap there).
CONFIG_ENV = "KUBETRAIN_OPERATOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/kubetrain-operator/config.yaml")


#: A namespace name (RFC 1123 label).
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodePool(_Model):
    """One kind of node a job can ask for by name."""

    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu: bool = Field(False, description="Whether the pool's nodes have GPUs.")
    gpuResource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    gpusPerNode: int | None = Field(
        None, ge=1, description="GPUs of one node, when known: larger asks fail validation."
    )
    gangScheduler: Literal["none", "volcano"] = Field(
        "none",
        description="volcano: the pool's pods are scheduled by Volcano as one gang (a PodGroup "
        "per job with minMember = head + workers), so a job never holds part of the GPUs.",
    )
    volcanoQueue: str = Field("default", min_length=1, description="Volcano queue of the gangs.")


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

    nodePools: dict[str, NodePool] = Field(
        default_factory=lambda: {"cpu": NodePool(nodeSelector={"kubetrain.io/pool": "cpu"})}
    )
    defaultNodePool: str | None = Field(
        None, description="Pool for jobs that name none; unset means no node constraints."
    )
    defaultImage: str | None = Field(
        None, description="Image for jobs that keep the API's default image (a local mirror)."
    )
    imagePullSecrets: list[str] = Field(default_factory=list)
    podSecurity: PodSecurity = Field(default_factory=PodSecurity)
    namespaces: list[Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)]] = Field(
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
    peeringName: str | None = Field(
        None,
        description="kopf peering object (kopf.dev); unset means standalone (one replica). "
        "With peering, of operators following the same jobs only the highest priority acts.",
    )
    peeringPriority: int = Field(0, description="This operator's kopf peering priority.")
    outputVolume: str | None = Field(
        None,
        description="A PersistentVolumeClaim mounted at /output in every Ray pod, for jobs "
        "whose spec.output.uri is unset.",
    )


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> OperatorConfig:
    """Read the config from ``path``, else ``$KUBETRAIN_OPERATOR_CONFIG``, else the chart's
    mount point (a missing default file means all defaults, handy for development); then
    apply ``overrides`` (command-line flags), validating the result as a whole."""
    explicit = path or os.environ.get(CONFIG_ENV)
    file = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    if not file.exists() and explicit:
        raise UserError("operator config file not found", field=str(file))
    try:
        data = (yaml.safe_load(file.read_text()) or {}) if file.exists() else {}
        return OperatorConfig.model_validate({**data, **(overrides or {})})
    except yaml.YAMLError as exc:
        raise UserError(f"invalid operator config: {exc}", field=str(file)) from None
    except ValidationError as exc:
        problems = "; ".join(f"{e.path}: {e.message}" for e in errors_of(exc))
        where = str(file) if file.exists() else "command line"
        raise UserError(f"invalid operator config: {problems}", field=where) from None
