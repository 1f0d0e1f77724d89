"""Helpers for the operator fault tests: the real operator as a killable subprocess, and
watches that record what the API server stored (every status version of every job, every
pod created), so that the tests judge by what happened, not by a final snapshot alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException
from operator_fixtures import GROUP, PLURAL, VERSION
from urllib3.exceptions import HTTPError, ProtocolError

from kubetrain_operator.builders import ANNOTATION_DECIDED_FROM
from kubetrain_operator.naming import LABEL_JOB_UID

#: Phases in the order a job moves through them within one run (suspend starts a new run).
PHASE_RANK = {"Pending": 0, "Provisioning": 1, "Running": 2, "Retrying": 2}
TERMINAL = ("Succeeded", "Failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _die_with_parent() -> None:
    """A killed test session leaves no operator behind (it would act on later tests)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class OperatorProcess:
    """``python -m kubetrain_operator`` for one namespace; SIGKILLed and restarted at will.
    Every start appends to the same log, under a marker line, so a failure shows all runs."""

    def __init__(
        self, config: Path, namespace: str, kubeconfig: Path, log: Path, *, verbose: bool = False
    ) -> None:
        self.config, self.namespace, self.kubeconfig, self.log = config, namespace, kubeconfig, log
        self.verbose = verbose or bool(os.environ.get("KUBETRAIN_FAULT_VERBOSE"))
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== operator start {self.starts} at {time.time():.3f}\n".encode())
            out.flush()
            argv = [sys.executable, "-m", "kubetrain_operator", "--config", str(self.config),
                    "-n", self.namespace,
                    "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"]  # fmt: skip
            if self.verbose:
                argv.append("--verbose")
            self.proc = subprocess.Popen(
                argv,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=out,
                stderr=subprocess.STDOUT,
                # only prctl(2) before exec: safe with the test's threads
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def live(self) -> bool:
        """kopf's liveness endpoint answers 200 (the operator has started its loops)."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        return self.running() and http_get(url)[0] == 200

    def kill(self) -> None:
        """SIGKILL: no cleanup handler, no graceful stop of daemons, as an OOM kill."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM and wait; the exit code (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass(frozen=True)
class Sample:
    """One stored version of a job, as the watch delivered it."""

    at: float
    kind: str
    resource_version: int
    generation: int
    phase: str | None
    reason: str | None
    observed_generation: int | None
    storage_reason: str | None  # reason of condition SharedStorage


def sample(kind: str, obj: dict[str, Any]) -> Sample:
    meta, status = obj["metadata"], obj.get("status") or {}
    storage = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "SharedStorage"), {}
    )
    return Sample(
        at=time.monotonic(),
        kind=kind,
        resource_version=int(meta["resourceVersion"]),
        generation=int(meta.get("generation", 1)),
        phase=status.get("phase"),
        reason=status.get("reason"),
        observed_generation=status.get("observedGeneration"),
        storage_reason=storage.get("reason"),
    )


@dataclass
class Recorder:
    """Two watches in threads: every version of every TrainingJob (by uid) and the uid of
    every pod created for a job. Reconnects from the last resourceVersion, so an API
    server restart loses nothing; a 410 (history gone) is recorded as an error."""

    api: k8s.ApiClient
    namespace: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    pods_created: dict[str, set[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    relists: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        # urllib3 logs a warning per retry of a watch while the API server is away
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        custom, core = k8s.CustomObjectsApi(self.api), k8s.CoreV1Api(self.api)
        jobs_list = custom.list_namespaced_custom_object
        job_args = (GROUP, VERSION, self.namespace, PLURAL)
        streams: list[tuple[str, Callable[..., Any], tuple[Any, ...], Callable[..., None]]] = [
            ("jobs", jobs_list, job_args, self._on_job),
            ("pods", core.list_namespaced_pod, (self.namespace,), self._on_pod),
        ]
        for name, lister, args, handle in streams:
            version = self._list_version(lister, args)
            thread = threading.Thread(
                target=self._run, args=(lister, args, handle, version), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    @staticmethod
    def _list(lister: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
        return json.loads(lister(*args, _preload_content=False).data)

    def _list_version(self, lister: Callable[..., Any], args: tuple[Any, ...]) -> str:
        return self._list(lister, args)["metadata"]["resourceVersion"]

    def _relist(
        self,
        lister: Callable[..., Any],
        args: tuple[Any, ...],
        handle: Callable[[str, dict[str, Any]], None],
    ) -> str:
        """After a 410 (a restarted API server's watch cache starts at the current version):
        take the current objects as seen (ADDED) and watch on from the listing's version."""
        listed = self._list(lister, args)
        for obj in listed.get("items") or ():
            handle("ADDED", obj)
        self.relists += 1
        return listed["metadata"]["resourceVersion"]

    def _run(
        self,
        lister: Callable[..., Any],
        args: tuple[Any, ...],
        handle: Callable[[str, dict[str, Any]], None],
        version: str,
    ) -> None:
        while not self._stop.is_set():
            stream = k8s_watch.Watch()
            try:
                for event in stream.stream(
                    lister, *args, resource_version=version, timeout_seconds=20,
                    allow_watch_bookmarks=True, _request_timeout=(5, 40),
                ):  # fmt: skip
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") != 410:
                            self.errors.append(f"watch ERROR: {obj}")
                        version = self._relist(lister, args, handle)
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], obj)
                    if self._stop.is_set():
                        return
            except (ApiException, HTTPError, ProtocolError, OSError) as exc:
                if isinstance(exc, ApiException) and exc.status == 410:
                    version = self._relist(lister, args, handle)
                    continue
                time.sleep(0.2)  # the API server is away: resume from `version`
            finally:
                stream.stop()

    def _on_job(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        with self._lock:
            self.names[uid] = obj["metadata"]["name"]
            self.samples.setdefault(uid, []).append(sample(kind, obj))

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        job_uid = (obj["metadata"].get("labels") or {}).get(LABEL_JOB_UID)
        if kind == "ADDED" and job_uid:
            with self._lock:
                self.pods_created.setdefault(job_uid, set()).add(obj["metadata"]["uid"])

    def history(self, uid: str) -> list[Sample]:
        with self._lock:
            return list(self.samples.get(uid, ()))

    def uid_of(self, name: str) -> str | None:
        with self._lock:
            return next((u for u, n in self.names.items() if n == name), None)


@contextlib.contextmanager
def recording(api: k8s.ApiClient, namespace: str) -> Iterator[Recorder]:
    recorder = Recorder(api, namespace)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()


# ------------------------------------------------------------------ judging the record


def transitions(history: list[Sample]) -> list[Sample]:
    """The stored versions at which (phase, reason) changed: the status transitions."""
    out: list[Sample] = []
    last: tuple[str | None, str | None] = (None, None)
    for s in history:
        if s.kind == "DELETED":
            continue
        if (s.phase, s.reason) != last and s.phase is not None:
            out.append(s)
            last = (s.phase, s.reason)
    return out


def expected_events(history: list[Sample]) -> Counter[str]:
    """The Events the operator posts for this stored history, by reason (status.py): one
    per (phase, reason) transition; a resume also passes through Pending/Resumed within
    the same look (posted, not stored); NoSharedStorage once when that condition appears."""
    expected: Counter[str] = Counter()
    previous: Sample | None = None
    for s in transitions(history):
        expected[s.reason or ""] += 1
        resumed = previous is not None and previous.phase == "Suspended"
        if resumed and s.phase != "Suspended" and s.reason != "Resumed":
            expected["Resumed"] += 1
        previous = s
    storage = [s.storage_reason for s in history if s.kind != "DELETED"]
    for before, after in zip([None, *storage], storage, strict=False):
        if after == "NoSharedStorage" and before != "NoSharedStorage":
            expected["NoSharedStorage"] += 1
    return expected


def flaps(history: list[Sample]) -> list[str]:
    """Phase regressions within one run (a stale write, a lost pod view), moves out of a
    terminal phase, and observedGeneration going back (a status from an older spec)."""
    problems: list[str] = []
    rank, terminal, observed = -1, None, 0
    for s in transitions(history):
        if terminal is not None:
            problems.append(f"left {terminal} for {s.phase}/{s.reason} at rv {s.resource_version}")
        if s.phase in TERMINAL:
            terminal = s.phase
        elif s.phase == "Suspended":
            rank = -1
        elif PHASE_RANK.get(s.phase or "", 0) < rank:
            problems.append(f"back to {s.phase}/{s.reason} at rv {s.resource_version}")
        rank = max(rank, PHASE_RANK.get(s.phase or "", -1))
    for s in history:
        if s.observed_generation is not None:
            if s.observed_generation < observed:
                problems.append(
                    f"observedGeneration {s.observed_generation} after {observed} "
                    f"at rv {s.resource_version}"
                )
            observed = max(observed, s.observed_generation)
    return problems


@dataclass(frozen=True)
class PostedEvent:
    reason: str
    decided_from: str | None  # the job version the operator decided it from
    count: int


def job_events(core: k8s.CoreV1Api, namespace: str) -> dict[str, list[PostedEvent]]:
    """Events about TrainingJobs in the namespace, by the job's uid."""
    out: dict[str, list[PostedEvent]] = {}
    for event in core.list_namespaced_event(namespace).items:
        obj = event.involved_object
        if obj.kind == "TrainingJob":
            decided = (event.metadata.annotations or {}).get(ANNOTATION_DECIDED_FROM)
            posted = PostedEvent(event.reason, decided, event.count or 1)
            out.setdefault(obj.uid, []).append(posted)
    return out


@dataclass
class EventJudgement:
    missing: Counter[str]  # stored transitions without their Event
    duplicates: list[str]  # the same decision posted twice
    superseded: int  # Events of a decision a restarted operator made again, differently


def judge_events(history: list[Sample], posted: list[PostedEvent]) -> EventJudgement:
    """Compare the Events with the stored transitions. An Event whose decision was never
    stored is only explained when the operator died between posting and storing: then
    the restarted operator decided again from the same job version (another Event of the
    same version shows it); any other extra Event is a duplicate."""
    got: Counter[str] = Counter()
    for e in posted:
        got[e.reason] += e.count
    want = expected_events(history)
    decisions = Counter((e.reason, e.decided_from) for e in posted for _ in range(e.count))
    duplicates = [f"{r} from version {v} x{n}" for (r, v), n in decisions.items() if n > 1]
    reasons_by_version: dict[str | None, set[str]] = {}
    for e in posted:
        reasons_by_version.setdefault(e.decided_from, set()).add(e.reason)
    superseded = 0
    for reason, extra in (got - want).items():
        redecided = any(
            e.reason == reason and e.decided_from and len(reasons_by_version[e.decided_from]) > 1
            for e in posted
        )
        if redecided:
            superseded += extra
        else:
            duplicates.append(f"{reason} x{extra} more than stored transitions")
    return EventJudgement(want - got, duplicates, superseded)


def owned_children(api: k8s.ApiClient, namespace: str) -> list[tuple[str, str, str | None]]:
    """(kind, name, owner uid) of every object carrying a job-uid label in the namespace."""
    core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
    listers: dict[str, Callable[..., Any]] = {
        "Pod": core.list_namespaced_pod,
        "Service": core.list_namespaced_service,
        "ConfigMap": core.list_namespaced_config_map,
        "ServiceAccount": core.list_namespaced_service_account,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
    }
    found = []
    for kind, lister in listers.items():
        for obj in lister(namespace, label_selector=LABEL_JOB_UID).items:
            owners = obj.metadata.owner_references or []
            found.append((kind, obj.metadata.name, owners[0].uid if owners else None))
    return found
