"""Checks that need the operator's config, which the CRD schema cannot know: the node pool
exists, GPUs are asked only where there are GPUs, the job's own node selector does not
contradict its pool's.

Pure functions that raise :class:`kubetrain.errors.SpecError` naming the field; the
handler edge turns that into a ValidationFailed status, a Warning event and no retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetrain.api.manifests import errors_of
from kubetrain.api.quantity import parse_quantity
from kubetrain.api.raynode import HEAD_MEMORY_MINIMUM, HEAD_RESOURCES_FIELD
from kubetrain.api.v1alpha1 import ObjectMeta, Toleration, TrainingJobSpec
from kubetrain.errors import SpecError

from .config import NodePool, OperatorConfig


@dataclass(frozen=True)
class Placement:
    """Where a job's pods go: its pool's constraints merged with the job's own."""

    pool: str | None
    node_selector: dict[str, str]
    tolerations: tuple[Toleration, ...]
    gpu_resource: str
    #: Volcano queue when the pool schedules gangs with Volcano, else None.
    volcano_queue: str | None = None
    #: Whether the pods' CPU limit equals their request (the pool's ``cpuLimit``).
    cpu_limit: bool = True


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def check_job_name(name: str) -> None:
    """The API server takes any DNS subdomain as a TrainingJob's name ("9lives", "a.b"), but
    the name starts every child's name, and a Service's must be a DNS-1035 label."""
    try:
        ObjectMeta.model_validate({"name": name})
    except ValidationError as exc:
        raise SpecError(errors_of(exc)[0].message, field="metadata.name") from None


def parse_spec(raw: Any) -> TrainingJobSpec:
    """The spec as the API models see it; the API server's schema is looser than pydantic
    in places (rules not expressible in OpenAPI), so a stored spec can still be invalid.
    The models are strict about types, so kopf's mapping views become plain dicts first."""
    try:
        return TrainingJobSpec.model_validate(_plain(raw))
    except ValidationError as exc:
        first = errors_of(exc)[0]
        field = f"spec.{first.path}" if first.path else "spec"
        raise SpecError(first.message, field=field) from None


def check_head_size(spec: TrainingJobSpec) -> None:
    """A head below ``HEAD_MEMORY_MINIMUM`` would be stopped by its own memory monitor (or
    the kernel) before training starts, and the job would retry into the same wall."""
    field = f"{HEAD_RESOURCES_FIELD}.memory"
    memory = spec.cluster.head.resources.memory
    if parse_quantity(memory, field) < parse_quantity(HEAD_MEMORY_MINIMUM):
        raise SpecError(
            f"{memory} is too small for a Ray head: it holds Ray's own processes, the driver, "
            f"the data stage and Ray Train's controller; give it at least {HEAD_MEMORY_MINIMUM}",
            field=field,
        )


def resolve_placement(spec: TrainingJobSpec, config: OperatorConfig) -> Placement:
    """Validate the job against the pool catalogue and merge the pool's constraints."""
    cluster = spec.cluster
    name, pool = _chosen_pool(spec, config)
    # For the messages: a pool the job did not name is said to be the admin's default.
    by_default = cluster.nodePool is None
    which = _pool_phrase(name, by_default)

    gpus = spec.training.resourcesPerWorker.gpu
    if gpus > 0:
        if pool is None or not pool.gpu:
            where = f"{which} has" if name else "no node pool is set, so there are"
            raise SpecError(
                f"asks for {gpus} GPU(s) per worker but {where} no GPUs",
                field="spec.training.resourcesPerWorker.gpu",
            )
        if pool.gpusPerNode is not None and gpus > pool.gpusPerNode:
            raise SpecError(
                f"asks for {gpus} GPUs per worker but nodes of "
                f"{_pool_phrase(name, by_default, noun='pool')} have {pool.gpusPerNode}",
                field="spec.training.resourcesPerWorker.gpu",
            )

    selector = dict(pool.nodeSelector) if pool else {}
    for key, value in cluster.nodeSelector.items():
        if key in selector and selector[key] != value:
            raise SpecError(
                f"{value!r} contradicts {which}, which requires {selector[key]!r}",
                field=f"spec.cluster.nodeSelector[{key}]",
            )
        selector[key] = value

    tolerations = tuple(pool.tolerations if pool else ()) + tuple(
        t for t in cluster.tolerations if pool is None or t not in pool.tolerations
    )
    return Placement(
        pool=name,
        node_selector=selector,
        tolerations=tolerations,
        gpu_resource=pool.gpuResource if pool else "nvidia.com/gpu",
        volcano_queue=pool.volcanoQueue if pool and pool.gangScheduler == "volcano" else None,
        cpu_limit=pool.cpuLimit if pool else True,
    )


def _chosen_pool(
    spec: TrainingJobSpec, config: OperatorConfig
) -> tuple[str | None, NodePool | None]:
    """The job's pool, else the admin's default. Only a pool the job names can be unknown:
    ``load_config`` refuses a ``defaultNodePool`` that is not a key of ``nodePools``, so a
    missing default is the operator's bug, never reported as the user's."""
    named = spec.cluster.nodePool
    if named is None:
        default = config.defaultNodePool
        return default, config.nodePools[default] if default is not None else None
    if named not in config.nodePools:
        offered = ", ".join(sorted(config.nodePools)) or "none"
        raise SpecError(
            f"unknown node pool {named!r}; this cluster offers: {offered}",
            field="spec.cluster.nodePool",
        )
    return named, config.nodePools[named]


def _pool_phrase(name: str | None, by_default: bool, noun: str = "node pool") -> str:
    if by_default:
        return f"the default {noun} {name!r} (the job names none)"
    return f"{noun} {name!r}"
