"""How a failed Ray Train run is classified: a UserError from a worker stays the user's,
and a worker stopped for memory is told apart from other failures."""

from __future__ import annotations

import pytest
import ray.exceptions

from kubetrain.errors import SpecError
from kubetrain_runtime.trainer import (
    MemoryKill,
    _user_error,
    memory_kill,
    out_of_memory_message,
)

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
    assert memory_kill(WorkerGroupFailure({0: health})) == MemoryKill(None, None)


def test_an_out_of_memory_error_deep_in_the_chain_counts():
    oom = ray.exceptions.OutOfMemoryError("killed")
    assert memory_kill(_caused(RuntimeError("run failed"), WorkerGroupFailure({1: oom})))


def test_other_failures_are_not_out_of_memory():
    assert memory_kill(WorkerGroupFailure({0: ValueError("nan loss")})) is None


def test_a_user_error_from_a_worker_is_found():
    wrong = SpecError("no such column", field="spec.data.label")
    assert _user_error(WorkerGroupFailure({0: _caused(RuntimeError("x"), wrong)})) is wrong


#: Ray's memory monitor's words (ray.exceptions.OutOfMemoryError), as Ray 2.x writes them.
RAY_OOM = (
    "Task was killed due to the node running low on memory.\nMemory on the node (IP: {ip}, "
    "ID: 92edc4e97e4d) where the task (actor ID: 4f48, name=TrainController.__init__, "
    "pid=716, memory used=0.31GB) was running was 1.92GB / 2.00GB (0.96), which exceeds the "
    "memory usage threshold of 0.95. Ray killed this worker (ID: 58a9) because it was the "
    "most recently scheduled task"
)
PODS = {"10.244.0.12": "big-abcde-head", "10.244.0.10": "big-abcde-worker-1"}


def test_a_head_out_of_memory_blames_the_head_and_its_field():
    """The case a user met: 3 workers, a 2 GiB head. It is the head's memory to raise, not
    the workers'."""
    oom = ray.exceptions.OutOfMemoryError(RAY_OOM.format(ip="10.244.0.12"))
    kill = memory_kill(WorkerGroupFailure({0: oom}))
    assert kill == MemoryKill("10.244.0.12", "1.92GB / 2.00GB")
    message = out_of_memory_message(kill, "10.244.0.12", PODS)
    assert "head pod big-abcde-head ran out of memory (1.92GB / 2.00GB)" in message
    assert "spec.cluster.head.resources.memory" in message
    assert "resourcesPerWorker" not in message


def test_a_worker_out_of_memory_names_its_pod_and_field():
    kill = memory_kill(ray.exceptions.OutOfMemoryError(RAY_OOM.format(ip="10.244.0.10")))
    message = out_of_memory_message(kill, "10.244.0.12", PODS)
    assert "worker on pod big-abcde-worker-1 ran out of memory" in message
    assert "spec.training.resourcesPerWorker.memory" in message


def test_locally_one_machine_is_head_and_worker_the_worker_is_blamed():
    """``kubetrain run``: there is no head to size, the worker's memory is the knob."""
    kill = memory_kill(ray.exceptions.OutOfMemoryError(RAY_OOM.format(ip="127.0.0.1")))
    message = out_of_memory_message(kill, None, {"127.0.0.1": "laptop"})
    assert "spec.training.resourcesPerWorker.memory" in message


def test_an_older_message_without_the_node_id_still_names_the_node():
    text = "1 worker(s) were killed due to the node running low on memory. Memory on the node "
    text += "(IP: 10.10.10.1) was 110.41GB / 121.63GB (0.907749), which exceeds the threshold"
    kill = memory_kill(RuntimeError(text))
    assert kill == MemoryKill("10.10.10.1", "110.41GB / 121.63GB")
