"""What a look decides to do besides writing status, as plain values that ``reconcile``
executes, and the Events it posts. Shared by the decider and the builders (an Event's
object), so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EnsureCluster:
    """Create the setup objects (if ``setup``) and the pods named in ``pods``."""

    pods: tuple[str, ...]
    setup: bool


@dataclass(frozen=True)
class DeletePods:
    names: tuple[str, ...]
    #: Seconds the kubelet waits after SIGTERM (None: the pod's own, 30 s).
    grace: int | None = None


@dataclass(frozen=True)
class DeleteService:
    pass


@dataclass(frozen=True)
class SubmitRayJob:
    attempt: int


@dataclass(frozen=True)
class StopRayJob:
    submission_id: str


@dataclass(frozen=True)
class DeleteJob:
    """ttlSecondsAfterFinished has passed."""


@dataclass(frozen=True)
class SaveDriverLog:
    """Copy the Ray job's driver log into a ConfigMap owned by the job, before the head
    pod (and with it Ray's copy) is deleted. Best effort: a head that is already gone has
    no log to give, and the cleanup must not wait for it."""

    submission_id: str


Action = (
    EnsureCluster | DeletePods | DeleteService | SubmitRayJob | StopRayJob | DeleteJob
    | SaveDriverLog
)  # fmt: skip


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
