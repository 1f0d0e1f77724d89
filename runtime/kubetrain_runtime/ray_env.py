"""Starting or joining Ray without surprises.

A local run uses kubetrain's own Ray, sized to this machine: its temp dir is a short
per-user folder in /tmp (Unix socket paths must stay short), its auth token lives under
``~/.cache/kubetrain/ray`` (not ``~/.ray``), and its log spam is turned down. That Ray is
kept by a small process that outlives the run and stops it after an idle timeout
(``local_ray``), or, with the timeout 0, started and shut down by the run itself. Nothing
ever runs ``ray stop``, which would kill other people's Ray processes. With
``RAY_ADDRESS`` set, or in a cluster, the existing Ray is joined instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubetrain.api.raynode import WORKER_SLOT
from kubetrain_runtime.local_ray import (
    KeeperFiles,
    KeeperState,
    idle_seconds,
    process_alive,
    using_keeper,
)
from kubetrain_runtime.plan import Available

CACHE_DIR = Path(os.environ.get("KUBETRAIN_CACHE", Path.home() / ".cache" / "kubetrain"))
TOKEN_PATH = CACHE_DIR / "ray" / "auth_token"

#: Settings for every run: worker prints once, no usage reporting, and a controller that
#: polls its workers every 0.25 s instead of 2 s (``report`` blocks until it is polled,
#: which otherwise adds up to 2 s to every epoch).
COMMON_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}
#: Only for the private instance: one machine is never preempted, and its metrics go nowhere.
LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}
#: Set to 1 to see Ray's worker and actor output in a local run. It is off because it
#: would scroll the progress display away (Ray Train's placement-group cleaner, for one,
#: warns every second when the dashboard is not installed); it is still written under
#: ``logs_dir()``.
SHOW_LOGS_ENV = "KUBETRAIN_RAY_LOGS"


def temp_dir() -> str:
    """``KUBETRAIN_RAY_TMPDIR``, else ``/tmp/kubetrain-<uid>`` (kept short: Unix socket
    paths inside it are limited to about 100 characters)."""
    return os.environ.get("KUBETRAIN_RAY_TMPDIR") or f"/tmp/kubetrain-{os.getuid()}"


#: Finished local Ray sessions kept for their logs; older ones are removed at the next start.
KEEP_SESSIONS = 5


def prune_sessions(root: str | Path, keep: int = KEEP_SESSIONS) -> list[Path]:
    """Remove the session folders of finished local runs but the newest ``keep``: Ray
    never deletes them (tens of MB a day of test runs). A session whose starting process
    (the pid that ends its name) still runs is never touched. Returns what was removed."""
    folders = sorted(Path(root).glob("session_2*"), key=lambda p: p.name, reverse=True)
    removed: list[Path] = []
    for folder in folders[keep:]:
        pid = folder.name.rsplit("_", 1)[-1]
        if pid.isdigit() and process_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def logs_dir() -> str:
    """Where a local run's Ray logs are (worker output included)."""
    return f"{temp_dir()}/session_latest/logs"


@dataclass(frozen=True)
class RaySession:
    #: This run started the Ray it uses (a new keeper, or a private instance).
    started_here: bool
    local: bool
    available: Available
    #: kubetrain's own local Ray (the run may train in process); not a joined one.
    private: bool = False
    #: The keeper's state when the local Ray is kept between runs.
    keeper: KeeperState | None = None


def _private_token() -> str:
    """The embedded instance keeps token auth (Ray listens on the machine's address, not
    127.0.0.1) with a token of its own, created once and readable only by this user."""
    if not TOKEN_PATH.exists():
        TOKEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(TOKEN_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return str(TOKEN_PATH)


def _reload_ray_config() -> None:
    """Ray caches its settings from the environment when first imported; reread them so
    that the auth mode set above applies to this driver too (Ray does the same when it
    turns token auth on by itself)."""
    from ray._raylet import Config

    Config.initialize("")


class _NotTheUsersMistake(logging.Filter):
    """Drops Ray Data's error records (tracebacks, "please open an issue") about a task
    that failed on the user's input: the run reports that as one line naming the field.
    Filters run inside the ``except`` that logs, so the failure is the one in hand."""

    def filter(self, record: logging.LogRecord) -> bool:
        from kubetrain_runtime.data.stage import user_error_inside

        failure = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return failure is None or user_error_inside(failure) is None


#: Ray Data's loggers that report a failed task of a running dataset, traceback and all.
_TASK_FAILURES = ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")


def quiet_driver() -> None:
    """Driver-side settings: no progress bars or per-dataset banners, a cheap shuffle,
    blocks sized to the cluster."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # "no available CPUs" while busy
    for name in _TASK_FAILURES:
        failures = logging.getLogger(name)
        if not any(isinstance(f, _NotTheUsersMistake) for f in failures.filters):
            failures.addFilter(_NotTheUsersMistake())
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # The default shuffle (aggregations, splits, groupby) starts aggregator actors: measured
    # here, a MinMaxScaler fit on 1000 rows took 17 s that way and 0.05 s with the
    # task-based sort shuffle, which is plenty for the data sizes this runs on.
    context.shuffle_strategy = "sort_shuffle_pull_based"
    # Reads aim for 200 blocks by default, splitting 8 files of 6 MB into 48 blocks here;
    # on 2 CPUs the per-block task overhead then cost 4x the work (16.6 s vs 3.8 s).
    cpus = int(ray.cluster_resources().get("CPU", 1))
    context.read_op_min_num_blocks = max(8, 2 * cpus)
    # Blocks in a fixed order: otherwise a groupby (dropDuplicates) hands its groups on in
    # the order its tasks finish, and the seeded split then draws other rows each run
    # (measured: the iris example's val_accuracy was 0.97 in one run and 0.89 in the next).
    context.execution_options.preserve_order = True


def available() -> Available:
    import ray

    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Available(
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        memory=float(resources.get("memory", 0.0)),
        nodes=max(1, nodes),
        worker_slots=float(resources.get(WORKER_SLOT, 0.0)),
    )


def describe_local_ray(idle: float | None = None) -> str:
    """What ``ray_session(local=True)`` is about to do, in a few words for the display."""
    if os.environ.get("RAY_ADDRESS"):
        return f"joining {os.environ['RAY_ADDRESS']}"
    idle = idle_seconds() if idle is None else idle
    if idle <= 0:
        return "a private Ray for this run"
    state = KeeperFiles(Path(temp_dir())).read()
    if state is not None:
        import time

        return f"the local Ray kept since {(time.time() - state.started) / 60:.0f} min ago"
    return f"a local Ray, kept for later runs until {idle / 60:g} min idle"


def _auth_env() -> None:
    """Token auth with kubetrain's own token, for the keeper and for its drivers."""
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_TOKEN_PATH"] = _private_token()
        os.environ["RAY_AUTH_MODE"] = "token"
        _reload_ray_config()


def _common_env() -> None:
    for key, value in COMMON_ENV.items():
        os.environ.setdefault(key, value)


#: The local Ray's object store in MiB (default: Ray's own, 30% of the memory). Data that
#: does not fit spills to disk (``temp_dir()``), so a small store bounds memory, not size.
OBJECT_STORE_ENV = "KUBETRAIN_OBJECT_STORE_MB"


def object_store_bytes() -> int | None:
    value = os.environ.get(OBJECT_STORE_ENV)
    return int(float(value) * 2**20) if value else None


def local_init() -> int:
    """Start a Ray head in this process, sized to the machine; returns its CPUs."""
    import ray

    _common_env()
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    _auth_env()
    prune_sessions(temp_dir())
    cpus = os.cpu_count() or 1
    ray.init(
        num_cpus=cpus,
        object_store_memory=object_store_bytes(),
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=os.environ.get(SHOW_LOGS_ENV) == "1",
        _temp_dir=temp_dir(),
    )
    return cpus


def _job_env() -> dict[str, object] | None:
    """What this run's Ray workers need from its environment: a Ray started before the run
    (kept, or joined) has workers that never saw the caller's object-store credentials."""
    from kubetrain_runtime.storage import storage_env

    env = storage_env()
    return {"env_vars": env} if env else None


@contextmanager
def ray_session(*, local: bool, idle: float | None = None) -> Iterator[RaySession]:
    """Use the Ray this process already has, join ``RAY_ADDRESS`` (or the cluster, when not
    local), or use kubetrain's local Ray: kept between runs for ``idle`` seconds (default
    ``KUBETRAIN_RAY_IDLE_SECONDS``), or private to this run when that is 0."""
    import ray

    _common_env()
    if ray.is_initialized():
        quiet_driver()
        yield RaySession(started_here=False, local=local, available=available())
        return
    if not local or os.environ.get("RAY_ADDRESS"):
        ray.init(
            address=os.environ.get("RAY_ADDRESS", "auto"),
            logging_level=logging.WARNING,
            runtime_env=_job_env() if local else None,
        )
        quiet_driver()
        yield RaySession(started_here=False, local=local, available=available())
        return
    idle = idle_seconds() if idle is None else idle
    if idle <= 0:
        local_init()
        try:
            quiet_driver()
            yield RaySession(started_here=True, local=True, available=available(), private=True)
        finally:
            ray.shutdown()
        return
    with using_keeper(KeeperFiles(Path(temp_dir())), idle) as (state, started):
        _auth_env()
        ray.init(
            address=state.address,
            logging_level=logging.WARNING,
            log_to_driver=os.environ.get(SHOW_LOGS_ENV) == "1",
            runtime_env=_job_env(),
        )
        try:
            quiet_driver()
            yield RaySession(started, True, available(), private=True, keeper=state)
        finally:
            ray.shutdown()
