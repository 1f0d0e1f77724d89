"""Checks that need the operator's config, which the CRD schema cannot know: the node pool
exists, GPUs are asked only where there are GPUs, the job's own node selector does not
contradict its pool's.

Pure functions that raise :class:`kubetrain.errors.SpecError` naming the field; the
handler edge turns that into a ValidationFailed status, a Warning event and no retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetrain.api.manifests import errors_of
from kubetrain.api.v1alpha1 import Toleration, TrainingJobSpec
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


def parse_spec(raw: Any) -> TrainingJobSpec:
    """The spec as the API models see it; the API server's schema is looser than pydantic
    in places (rules not expressible in OpenAPI), so a stored spec can still be invalid."""
    try:
        return TrainingJobSpec.model_validate(raw)
    except ValidationError as exc:
        first = errors_of(exc)[0]
        field = f"spec.{first.path}" if first.path else "spec"
        raise SpecError(first.message, field=field) from None


def resolve_placement(spec: TrainingJobSpec, config: OperatorConfig) -> Placement:
    """Validate the job against the pool catalogue and merge the pool's constraints."""
    cluster = spec.cluster
    name = cluster.nodePool or config.defaultNodePool
    pool: NodePool | None = None
    if name is not None:
        pool = config.nodePools.get(name)
        if pool is None:
            offered = ", ".join(sorted(config.nodePools)) or "none"
            raise SpecError(
                f"unknown node pool {name!r}; this cluster offers: {offered}",
                field="spec.cluster.nodePool",
            )

    gpus = spec.training.resourcesPerWorker.gpu
    if gpus > 0:
        if pool is None or not pool.gpu:
            where = f"node pool {name!r} has" if name else "no node pool is set, so there are"
            raise SpecError(
                f"asks for {gpus} GPU(s) per worker but {where} no GPUs",
                field="spec.training.resourcesPerWorker.gpu",
            )
        if pool.gpusPerNode is not None and gpus > pool.gpusPerNode:
            raise SpecError(
                f"asks for {gpus} GPUs per worker but nodes of pool {name!r} have "
                f"{pool.gpusPerNode}",
                field="spec.training.resourcesPerWorker.gpu",
            )

    selector = dict(pool.nodeSelector) if pool else {}
    for key, value in cluster.nodeSelector.items():
        if key in selector and selector[key] != value:
            raise SpecError(
                f"{value!r} contradicts node pool {name!r}, which requires {selector[key]!r}",
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
    )
