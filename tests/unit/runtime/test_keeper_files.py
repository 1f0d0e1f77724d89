"""The local Ray keeper's bookkeeping: its state file, the in-use lock, the idle timeout.
(Starting a real keeper is in tests/runtime/test_local_ray.py.)"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from kubetrain_runtime.local_ray import (
    DEFAULT_IDLE_SECONDS,
    KeeperFiles,
    KeeperState,
    _idle_now,
    _try_retire,
    idle_seconds,
)

pytestmark = pytest.mark.unit

DEAD_PID = 2**22 + 4321  # above any pid_max default: no such process


def state(pid: int) -> KeeperState:
    return KeeperState(pid, "127.0.0.1:6379", "/usr/bin/python3", "2.60.0", "0.1.0", 2, 600, 0)


def test_a_live_keepers_state_is_read_and_a_dead_ones_removed(tmp_path: Path):
    files = KeeperFiles(tmp_path)
    files.state.write_text(json.dumps(asdict(state(os.getpid()))))
    assert files.read() == state(os.getpid())
    files.state.write_text(json.dumps(asdict(state(DEAD_PID))))
    assert files.read() is None and not files.state.exists()


@pytest.mark.parametrize("text", ["", "{not json", '{"pid": 1}'])
def test_a_missing_or_broken_state_is_no_keeper(tmp_path: Path, text: str):
    files = KeeperFiles(tmp_path)
    if text:
        files.state.write_text(text)
    assert files.read() is None


def test_a_run_holding_the_in_use_lock_keeps_the_keeper_busy(tmp_path: Path):
    files = KeeperFiles(tmp_path)
    assert _idle_now(files)
    with open(files.in_use, "a+") as run:
        fcntl.flock(run, fcntl.LOCK_SH)
        assert not _idle_now(files)
        assert not _try_retire(files), "never retire under a running run"
        fcntl.flock(run, fcntl.LOCK_UN)
    files.state.write_text(json.dumps(asdict(state(os.getpid()))))
    assert _try_retire(files) and not files.state.exists()


def test_a_run_that_is_starting_blocks_retiring(tmp_path: Path):
    files = KeeperFiles(tmp_path)
    files.state.write_text(json.dumps(asdict(state(os.getpid()))))
    with open(files.start, "a+") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)
        assert not _try_retire(files)
    assert files.state.exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, DEFAULT_IDLE_SECONDS), ("0", 0.0), ("30", 30.0), ("-5", 0.0), ("soon", 600.0)],
)
def test_idle_timeout_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("KUBETRAIN_RAY_IDLE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("KUBETRAIN_RAY_IDLE_SECONDS", raw)
    assert idle_seconds() == expected
