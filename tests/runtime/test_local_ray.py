"""`kubetrain run` as a user types it, twice: the first run starts the kept local Ray, the
second reuses it (same keeper, trains in process), and the keeper stops its Ray once no run
has used it for the idle timeout, leaving no Ray process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kubetrain_runtime.local_ray import KeeperFiles

pytestmark = pytest.mark.runtime

#: Long enough for the second run to start (imports take seconds on two busy cores).
IDLE_SECONDS = 30


def _job(examples_dir: Path, folder: Path) -> Path:
    document = yaml.safe_load((examples_dir / "iris-csv-mlp.yaml").read_text())
    document["spec"]["data"]["source"]["uri"]["path"] = str(examples_dir / "data/iris-dirty.csv")
    document["spec"]["training"]["epochs"] = 2
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _run(job: Path, output: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kubetrain.cli", "run", str(job), "--output", str(output)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _ray_processes(root: str) -> list[str]:
    """Command lines of processes that belong to the Ray under ``root``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if root in line and "pytest" not in line:
            found.append(line)
    return found


def test_runs_reuse_the_kept_ray_until_it_is_idle(examples_dir, tmp_path):
    root = f"/tmp/kt-keep-{os.getpid()}"
    env = {
        **os.environ,
        "KUBETRAIN_RAY_TMPDIR": root,
        "KUBETRAIN_RAY_IDLE_SECONDS": str(IDLE_SECONDS),
    }
    env.pop("RAY_ADDRESS", None)
    job, files = _job(examples_dir, tmp_path), KeeperFiles(Path(root))
    try:
        first = _run(job, tmp_path / "one", env)
        assert first.returncode == 0, first.stderr + first.stdout
        keeper = files.read()
        assert keeper is not None, "the first run leaves its Ray kept"
        assert "kept for later runs" in first.stdout and "local mode" in first.stdout

        second = _run(job, tmp_path / "two", env)
        assert second.returncode == 0, second.stderr + second.stdout
        assert files.read() == keeper, "the second run used the same keeper"
        assert "the local Ray kept since" in second.stdout
        timings = [
            json.loads((tmp_path / run / "metrics.json").read_text())["timelineSeconds"]
            for run in ("one", "two")
        ]
        print("ray_ready first, second:", [t["ray_ready"] for t in timings])

        deadline = time.monotonic() + IDLE_SECONDS + 30
        while files.read() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert files.read() is None, "the keeper stopped after the idle timeout"
        time.sleep(2)
        assert _ray_processes(root) == [], "no Ray process outlives its keeper"
    finally:
        from kubetrain_runtime.local_ray import stop

        stop(files)
        shutil.rmtree(root, ignore_errors=True)
