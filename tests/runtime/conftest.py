"""One local Ray for the whole runtime tier (starting one costs seconds), plus fixtures
that load the examples with small overrides and run jobs with a collecting reporter."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrain.api.v1alpha1 import TrainingJob
from kubetrain_runtime.job import RunOptions, RunSummary, run_job
from kubetrain_runtime.ray_env import RaySession, ray_session
from kubetrain_runtime.reporting import CollectingReporter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[RaySession]:
    # A private Ray (idle 0): the tier must not leave a kept Ray behind; the keeper has
    # its own test (test_local_ray.py).
    with ray_session(local=True, idle=0) as session:
        yield session


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def _example(name: str, **spec_overrides: Any) -> TrainingJob:
    """An example manifest, with ``spec`` keys merged over it."""
    document = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    document["spec"] = merge(document["spec"], spec_overrides)
    return TrainingJob.model_validate(document)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def example() -> Callable[..., TrainingJob]:
    """``example("digits-cnn", training={"epochs": 2})``: a manifest with overrides."""
    return _example


@pytest.fixture(scope="session")
def train(ray_local: RaySession) -> Callable[..., tuple[RunSummary, CollectingReporter]]:
    """Run a job on the shared Ray; returns its summary and every reported event."""

    def run(
        job: TrainingJob, output: Path, workers: int | None = None
    ) -> tuple[RunSummary, CollectingReporter]:
        reporter = CollectingReporter()
        summary = run_job(
            job, reporter, RunOptions(str(output), EXAMPLES, workers, local=True), ray_local
        )
        return summary, reporter

    return run
