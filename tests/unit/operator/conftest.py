"""Shared builders of specs and configs for the operator's pure tests."""

from __future__ import annotations

from typing import Any

import pytest

from kubetrain.api.v1alpha1 import TrainingJobSpec
from kubetrain_operator.config import NodePool, OperatorConfig
from kubetrain_operator.naming import JobRef

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def make_spec(**overrides: Any) -> TrainingJobSpec:
    """A small valid spec; ``overrides`` are dotted paths, e.g. ``training__workers=2``."""
    raw: dict[str, Any] = {
        "data": {"source": {"builtin": {"name": "iris"}}, "label": "target"},
        "model": {"type": "mlp"},
        "training": {"epochs": 2},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainingJobSpec.model_validate(raw)


def make_config(**updates: Any) -> OperatorConfig:
    pools = {
        "cpu": NodePool(nodeSelector={"kubetrain.io/pool": "cpu"}),
        "a100": NodePool(
            nodeSelector={"kubetrain.io/pool": "a100"},
            tolerations=[GPU_TAINT],
            gpu=True,
            gpusPerNode=8,
        ),
        "amd": NodePool(
            nodeSelector={"kubetrain.io/pool": "amd"}, gpu=True, gpuResource="amd.com/gpu"
        ),
    }
    return OperatorConfig.model_validate({"nodePools": pools, **updates})


@pytest.fixture
def job() -> JobRef:
    return JobRef("iris", "team-a", "3f2a9c1e-0000-4000-8000-000000000001")


@pytest.fixture(name="make_spec")
def make_spec_fixture() -> Any:
    return make_spec


@pytest.fixture(name="make_config")
def make_config_fixture() -> Any:
    return make_config
