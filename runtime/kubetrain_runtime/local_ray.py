"""A local Ray that outlives one ``kubetrain run`` and stops itself when idle.

Starting Ray costs seconds on a small machine (GCS, raylet, their sockets), more than a
whole demo's training. Ray users keep ``ray start --head`` running for that reason; this
is the same idea, without a process to forget: the first run starts a *keeper*, a small
detached process whose ``ray.init`` owns the head node, and every later run connects to it
in well under a second. Each run holds a shared lock on ``in-use.lock`` while it works;
when no run has held it for ``KUBETRAIN_RAY_IDLE_SECONDS`` (default 600; 0 turns the
keeper off, each run then starts and stops a private Ray) the keeper shuts its Ray down and
exits. Ray's processes share the keeper's fate (Ray starts them so), so killing the keeper
stops them too, and nothing here ever runs ``ray stop``, which would stop every Ray of the
user. ``kubetrain ray status`` and ``kubetrain ray stop`` show and stop it.

A keeper is reused only by runs of the same Python, Ray and kubetrain: the raylet starts
workers with the keeper's interpreter, so a run from another environment replaces it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from kubetrain import __version__

IDLE_ENV = "KUBETRAIN_RAY_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 600.0
#: How long a run waits for a new keeper's Ray to come up.
START_TIMEOUT_SECONDS = 90.0
POLL_SECONDS = 1.0


def idle_seconds() -> float:
    """The keeper's idle timeout from the environment (0: no keeper)."""
    raw = os.environ.get(IDLE_ENV, "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_IDLE_SECONDS
    except ValueError:
        return DEFAULT_IDLE_SECONDS


@dataclass(frozen=True)
class KeeperState:
    """What a keeper writes once its Ray is up (``local-ray.json``)."""

    pid: int
    address: str
    python: str
    ray: str
    kubetrain: str
    cpus: int
    idle_seconds: float
    started: float

    def matches_this_process(self) -> bool:
        import ray

        return (self.python, self.ray, self.kubetrain) == (
            sys.executable,
            ray.__version__,
            __version__,
        )


@dataclass(frozen=True)
class KeeperFiles:
    """The keeper's files, all in the local Ray's temp folder."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "local-ray.json"

    @property
    def in_use(self) -> Path:
        return self.root / "in-use.lock"

    @property
    def start(self) -> Path:
        return self.root / "start.lock"

    @property
    def log(self) -> Path:
        return self.root / "keeper.log"

    def read(self) -> KeeperState | None:
        """The state of a keeper that still runs, else None (a stale file is removed)."""
        try:
            state = KeeperState(**json.loads(self.state.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not process_alive(state.pid):
            self.state.unlink(missing_ok=True)
            return None
        return state


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _locked(path: Path, mode: int) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def using_keeper(files: KeeperFiles, idle: float) -> Iterator[tuple[KeeperState, bool]]:
    """A running keeper's state and whether it was started now, held in use (the shared
    lock) until the block ends."""
    with _locked(files.start, fcntl.LOCK_EX):
        state = files.read()
        started = False
        if state is not None and not state.matches_this_process():
            stop(files)
            state = None
        if state is None:
            state, started = _start(files, idle), True
        in_use = open(files.in_use, "a+")  # noqa: SIM115 - held past the start lock
        fcntl.flock(in_use, fcntl.LOCK_SH)
    try:
        yield state, started
    finally:
        fcntl.flock(in_use, fcntl.LOCK_UN)
        in_use.close()


def _start(files: KeeperFiles, idle: float) -> KeeperState:
    files.state.unlink(missing_ok=True)
    files.root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "kubetrain_runtime.local_ray", "serve", "--idle", str(idle)]
    with open(files.log, "w") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not stopped by the run's Ctrl-C
            close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        state = files.read()
        if state is not None and state.pid == process.pid:
            return state
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    tail = files.log.read_text(errors="replace").strip().splitlines()[-5:]
    raise RuntimeError(f"the local Ray did not start (log {files.log}): {' | '.join(tail)}")


def stop(files: KeeperFiles, timeout: float = 30.0) -> KeeperState | None:
    """Stop the keeper (and so its Ray); returns what was stopped."""
    state = files.read()
    if state is None:
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    files.state.unlink(missing_ok=True)
    return state


# ---------------------------------------------------------------------- the keeper


def _lock_now(handle: IO[str]) -> bool:
    """Take the exclusive lock if nobody holds it (without waiting)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _idle_now(files: KeeperFiles) -> bool:
    """No run holds the in-use lock (checked without waiting)."""
    with open(files.in_use, "a+") as handle:
        if not _lock_now(handle):
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def _try_retire(files: KeeperFiles) -> bool:
    """Remove the state file, if no run is starting or running, so that none connects
    to a Ray about to stop. True when retired."""
    with open(files.start, "a+") as start:
        if not _lock_now(start):
            return False
        try:
            if not _idle_now(files):
                return False
            files.state.unlink(missing_ok=True)
            return True
        finally:
            fcntl.flock(start, fcntl.LOCK_UN)


def serve(files: KeeperFiles, idle: float) -> int:
    """The keeper's main: start Ray, publish its address, wait until idle, stop Ray."""
    import ray

    from kubetrain_runtime.ray_env import local_init

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a run's Ctrl-C must not stop it
    cpus = local_init()
    state = KeeperState(
        pid=os.getpid(),
        address=ray.get_runtime_context().gcs_address,
        python=sys.executable,
        ray=ray.__version__,
        kubetrain=__version__,
        cpus=cpus,
        idle_seconds=idle,
        started=time.time(),
    )
    tmp = files.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(files.state)
    idle_since: float | None = None
    while not stopping:
        time.sleep(POLL_SECONDS)
        if not _idle_now(files):
            idle_since = None
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since >= idle and _try_retire(files):
            break
    if files.read() == state:
        files.state.unlink(missing_ok=True)
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    from kubetrain_runtime.ray_env import temp_dir

    parser = argparse.ArgumentParser(prog="python -m kubetrain_runtime.local_ray")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return serve(KeeperFiles(Path(temp_dir())), args.idle)


if __name__ == "__main__":
    sys.exit(main())
