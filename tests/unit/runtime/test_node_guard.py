"""The Ray pod's main process: it passes the node's exit code through, and ends the node
once the container's OOM-kill counter moves (read from a file standing in for the cgroup)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from kubetrain_runtime import node_guard

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n", 1),  # cgroup v2 memory.events
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n", 4),  # cgroup v1 memory.oom_control
        ("low 0\n", None),
    ],
)
def test_the_oom_counter_is_read_from_either_cgroup_version(tmp_path, text, expected):
    counter = tmp_path / "memory.events"
    counter.write_text(text)
    assert node_guard.oom_kills([tmp_path / "absent", counter]) == expected


def test_the_node_exit_code_is_passed_through(tmp_path):
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    assert node_guard.supervise(command, [tmp_path / "absent"]) == 3


def test_an_oom_kill_in_the_container_ends_the_node(tmp_path, monkeypatch):
    monkeypatch.setattr(node_guard, "POLL_SECONDS", 0.05)
    counter = tmp_path / "memory.oom_control"
    counter.write_text("oom_kill 0\n")
    threading.Timer(0.3, lambda: counter.write_text("oom_kill 1\n")).start()
    began = time.monotonic()
    code = node_guard.supervise([sys.executable, "-c", "import time; time.sleep(60)"], [counter])
    assert code == node_guard.OOM_EXIT_CODE
    assert time.monotonic() - began < 10


def test_a_node_slow_to_stop_is_killed_after_the_grace(tmp_path, monkeypatch):
    """``ray start --block`` ignores nothing but takes ~30 s to stop: the guard cuts it."""
    monkeypatch.setattr(node_guard, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(node_guard, "STOP_GRACE_SECONDS", 0.3)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(60)"
    main_thread_signal = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    main_thread_signal.start()
    began = time.monotonic()
    code = node_guard.supervise([sys.executable, "-c", stubborn], [tmp_path / "absent"])
    assert code == -signal.SIGKILL
    assert time.monotonic() - began < 10
