"""What both references of the scale benchmark do per job (the floor in operator_scale.py,
the minimal kopf operator in kopf_minimal.py): build the operator's children with its own
builders and create them in the operator's two round trips, so that they differ from the
operator only in what the comparison is about."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kubetrain_operator import builders
from kubetrain_operator.config import OperatorConfig
from kubetrain_operator.kube import KubeApi
from kubetrain_operator.naming import JobRef
from kubetrain_operator.validation import resolve_placement


async def create_children(
    api: KubeApi, job: JobRef, raw_spec: Mapping[str, Any], config: OperatorConfig
) -> None:
    spec = builders.TrainingJobSpec.model_validate(dict(raw_spec))
    kids = builders.build_children(job, spec, resolve_placement(spec, config), config)
    *first, last = kids.setup_waves  # setup objects; then the RoleBinding with the pods
    for wave in first:
        await asyncio.gather(*(api.create(o) for o in wave))
    await asyncio.gather(*(api.create(o) for o in (*last, *kids.pods)))
