"""Old local Ray session folders are pruned; live and recent ones are kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubetrain_runtime.ray_env import prune_sessions

pytestmark = pytest.mark.unit


def session(root: Path, stamp: str, pid: int) -> Path:
    folder = root / f"session_2026-11-{stamp}_000000_{pid}"
    (folder / "logs").mkdir(parents=True)
    (folder / "logs" / "raylet.out").write_text("log")
    return folder


def test_only_the_newest_and_the_running_sessions_stay(tmp_path: Path):
    dead = 2**22 + 12345  # above any pid_max default: no such process
    old = [session(tmp_path, f"0{day}_10-00-00", dead) for day in range(1, 6)]
    running = session(tmp_path, "01_09-00-00", os.getpid())  # oldest, but still running
    recent = [session(tmp_path, f"2{day}_10-00-00", dead) for day in range(3)]
    (tmp_path / "session_latest").symlink_to(recent[-1])

    removed = prune_sessions(tmp_path, keep=3)

    assert sorted(removed) == sorted(old)
    assert all(folder.exists() for folder in (*recent, running))
    assert (tmp_path / "session_latest").exists(), "the link is not a session folder"
    assert prune_sessions(tmp_path, keep=3) == [], "nothing more to do"


def test_a_missing_root_is_nothing_to_prune(tmp_path: Path):
    assert prune_sessions(tmp_path / "absent") == []
