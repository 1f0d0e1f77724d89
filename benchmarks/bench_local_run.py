"""``kubetrain run`` as a user types it: time to the first training step, wall time and
the result, median of N runs, for the default (in-process) run and for ``--workers 2``.

    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_local_run.py            # digits-cnn, 3 runs
    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_local_run.py --examples all --repeats 1
    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_local_run.py --cold     # Ray not kept
    git worktree add /tmp/kt-before <commit>     # then the same runs with that commit's code:
    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_local_run.py --code /tmp/kt-before

Each run is a fresh ``kubetrain`` process. Wall time is measured outside it (process start
to exit); the first step comes from its ``metrics.json`` (``timelineSeconds.first_step``,
seconds from the process start). "Warm" means what a user has after one run: the local Ray
kept by the previous run (``local_ray``), bytecode compiled, files in the page cache. One
untimed run warms up first. ``--cold`` stops the kept Ray before each run, so each pays for
starting Ray (the first run of a session).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("digits-cnn", "iris-csv-mlp", "sine-rnn", "digits-vae")
KEY = {
    "digits-cnn": "val_accuracy",
    "iris-csv-mlp": "val_accuracy",
    "sine-rnn": "val_mse",
    "digits-vae": "val_elbo",
}


#: ``--code``: another checkout whose packages (and examples) replace this one's.
CODE = {"root": ROOT}


def kubetrain(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kubetrain.cli", *args]
    root = CODE["root"]
    env = os.environ.copy()
    if root != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(str(root / p) for p in ("", "runtime", "operator"))
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=root, env=env)


def one_run(example: str, workers: int | None, cold: bool) -> dict[str, float | str]:
    if cold:
        kubetrain("ray", "stop")
    with tempfile.TemporaryDirectory(prefix="kt-bench-") as output:
        args = ["run", f"examples/{example}.yaml", "--output", output]
        if workers:
            args += ["--workers", str(workers)]
        began = time.perf_counter()
        done = kubetrain(*args)
        wall = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{example} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        metrics = json.loads((Path(output) / "metrics.json").read_text())
    final = metrics["final"]
    result = {
        "wall": wall,
        "first_step": metrics["timelineSeconds"].get("first_step", float("nan")),
        "ray_ready": metrics["timelineSeconds"]["ray_ready"],
        "data_ready": metrics["timelineSeconds"]["data_ready"],
        KEY[example]: final.get(KEY[example], float("nan")),
        "epochs": final.get("epoch", float("nan")),
    }
    if "sampleQuality" in metrics:
        result["sample_confidence"] = metrics["sampleQuality"]["meanConfidence"]
        result["classes_covered"] = metrics["sampleQuality"]["classesCovered"]
    return result


def median_of(runs: list[dict[str, float | str]]) -> dict[str, float]:
    return {key: statistics.median(float(r[key]) for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", default="digits-cnn", help="names, comma-separated, or all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="default,2", help="modes: default and/or N")
    parser.add_argument("--cold", action="store_true", help="stop the kept Ray before each run")
    parser.add_argument("--json", help="write every run here")
    parser.add_argument("--code", type=Path, help="run another checkout's code (a worktree)")
    args = parser.parse_args()
    if args.code:
        CODE["root"] = args.code.resolve()
    names = EXAMPLES if args.examples == "all" else tuple(args.examples.split(","))
    modes = [None if m == "default" else int(m) for m in args.workers.split(",")]
    load = os.getloadavg()[0]
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, load {load:.1f}, python {sys.version[:6]}")
    if not args.cold:
        one_run(names[0], None, cold=False)  # warm-up: the kept Ray starts here
    rows = []
    for name in names:
        for workers in modes:
            runs = [one_run(name, workers, args.cold) for _ in range(args.repeats)]
            rows.append({"example": name, "workers": workers or "in process", "runs": runs})
            med = median_of(runs)
            walls = ", ".join(f"{float(r['wall']):.1f}" for r in runs)
            extra = "".join(
                f"  {k} {med[k]:.4g}" for k in ("sample_confidence", "classes_covered") if k in med
            )
            print(
                f"{name:14} {workers or 'in-process'!s:>10}  first step {med['first_step']:6.2f} s"
                f"  wall {med['wall']:6.2f} s  (ray {med['ray_ready']:.2f}, data "
                f"{med['data_ready']:.2f})  {KEY[name]} {med[KEY[name]]:.4g}{extra}"
                f"  [median of {len(runs)}; walls {walls}]",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
