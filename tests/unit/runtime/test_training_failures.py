"""How a failed Ray Train run is classified: a UserError from a worker stays the user's,
and a worker stopped for memory is told apart from other failures."""

from __future__ import annotations

import pytest
import ray.exceptions

from kubetrain.errors import SpecError
from kubetrain_runtime.trainer import _out_of_memory, _user_error

pytestmark = pytest.mark.unit


class WorkerGroupFailure(Exception):
    """Stands in for Ray Train's error: it carries each rank's failure."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__("worker group failed")
        self.worker_failures = failures


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def test_a_memory_monitor_kill_reported_only_as_text_counts_as_out_of_memory():
    health = RuntimeError("Refer to the documentation on how to address the out of memory issue")
    assert _out_of_memory(WorkerGroupFailure({0: health}))


def test_an_out_of_memory_error_deep_in_the_chain_counts():
    oom = ray.exceptions.OutOfMemoryError("killed")
    assert _out_of_memory(_caused(RuntimeError("run failed"), WorkerGroupFailure({1: oom})))


def test_other_failures_are_not_out_of_memory():
    assert not _out_of_memory(WorkerGroupFailure({0: ValueError("nan loss")}))


def test_a_user_error_from_a_worker_is_found():
    wrong = SpecError("no such column", field="spec.data.label")
    assert _user_error(WorkerGroupFailure({0: _caused(RuntimeError("x"), wrong)})) is wrong
