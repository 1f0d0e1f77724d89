"""A Ray pod's main process: runs ``ray start --block`` and ends the node when the kernel
OOM-kills any process in the container.

On cgroup v2 the kubelet already kills a whole container when one of its processes runs
out of memory (``memory.oom.group``). On cgroup v1 only the largest process dies, which in
a Ray pod is the training worker: the node lives on, the Ray job fails with a vague
"worker died", and nothing in the pod's status says why. Ending the container after an
OOM kill gives both cgroup versions the same behaviour, and the container runtime then
reports the exit as ``OOMKilled``, which the operator turns into the job's reason.

    python -m kubetrain_runtime.node_guard ray start --block ...

Standard library only: it starts before anything else in the pod and must stay small.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: Where a container sees its own OOM-kill counter: cgroup v2, then v1.
OOM_COUNTERS = (
    Path("/sys/fs/cgroup/memory.events"),
    Path("/sys/fs/cgroup/memory/memory.oom_control"),
)
POLL_SECONDS = 1.0
#: How long ``ray start --block`` may take to stop after SIGTERM. It tries to drain the node
#: through the GCS, which on a pod being deleted (the head's GCS, often) waits about 30 s
#: for nothing; the pod would sit in Terminating for its whole grace period.
STOP_GRACE_SECONDS = 5.0
#: What a shell reports for a process ended by SIGKILL, as after an OOM kill.
OOM_EXIT_CODE = 128 + signal.SIGKILL


def oom_kills(counters: Sequence[Path] = OOM_COUNTERS) -> int | None:
    """The container's OOM kills so far, or None where no counter can be read."""
    for path in counters:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def supervise(command: Sequence[str], counters: Sequence[Path] = OOM_COUNTERS) -> int:
    """Run ``command``; return its exit code, or ``OOM_EXIT_CODE`` once an OOM kill is seen
    (the command is then killed, so no half-dead Ray node stays registered)."""
    child = subprocess.Popen(list(command))
    stop_asked: list[float] = []

    def forward(received: int, _frame: object) -> None:
        child.send_signal(received)
        stop_asked.append(time.monotonic())

    previous = {
        signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return _watch(child, counters, stop_asked)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _watch(
    child: subprocess.Popen[bytes], counters: Sequence[Path], stop_asked: list[float]
) -> int:
    baseline = oom_kills(counters)
    while True:
        try:
            return child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if stop_asked and time.monotonic() - stop_asked[0] > STOP_GRACE_SECONDS:
            child.kill()  # the pod is going away: nothing is left to drain to
            continue
        seen = oom_kills(counters)
        if baseline is not None and seen is not None and seen > baseline:
            print(
                "node_guard: the kernel killed a process of this Ray node for exceeding the "
                "pod's memory limit (OOM); stopping the node",
                file=sys.stderr,
                flush=True,
            )
            child.kill()
            child.wait()
            return OOM_EXIT_CODE


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("usage: python -m kubetrain_runtime.node_guard COMMAND...", file=sys.stderr)
        return 2
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main())
