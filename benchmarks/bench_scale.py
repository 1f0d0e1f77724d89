"""Data larger than memory through ``kubetrain run``: a generated Parquet table at 1x, 4x
and 16x, on a local Ray whose object store is capped (``KUBETRAIN_OBJECT_STORE_MB``) so
that 16x is at least five times what the store holds and has to stream and spill. Beside
it, where the table fits in memory, pandas and a plain PyTorch loop on the same data.

For each run: wall time, rows per second, cost per row, and the peak memory of the whole
process tree (the sum of each process's PSS: Ray's shared object store counted once, not
once per process that maps it; RSS summed the same way is printed too).

    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_scale.py                 # 1x = 1.25M rows
    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_scale.py --rows 200000 --store-mb 64

The model is an MLP on 16 float features for one epoch, so the data path dominates: that is
what must scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 16
ROW_BYTES = FEATURES * 4 + 8


def write_table(folder: Path, rows: int, files: int = 16, seed: int = 0) -> Path:
    """``rows`` rows in ``files`` Parquet files: 16 float32 features and a 4-class label
    that depends on them (so the MLP has something to learn)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(FEATURES, 4))
    per_file = -(-rows // files)
    for index in range(files):
        count = min(per_file, rows - index * per_file)
        if count <= 0:
            break
        x = rng.normal(size=(count, FEATURES)).astype(np.float32)
        label = (x @ weights).argmax(axis=1).astype(np.int64)
        columns = {f"f{i}": x[:, i] for i in range(FEATURES)} | {"label": label}
        pq.write_table(pa.table(columns), folder / f"part-{index:03d}.parquet")
    return folder


def job_manifest(data: Path, name: str) -> dict:
    return {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "source": {"uri": {"path": str(data), "format": "parquet"}},
                "label": "label",
                "preprocessing": {"scale": [{"columns": ["f*"], "method": "standard"}]},
            },
            "model": {"type": "mlp", "mlp": {"hiddenUnits": [64], "dropout": 0.0}},
            "training": {"epochs": 1, "batchSize": 1024, "checkpoint": {"keep": 1}},
            "output": {"plots": False},
        },
    }


class TreeMemory(threading.Thread):
    """Samples the memory of a process and all its descendants every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopping = pid, threading.Event()
        self.peak_pss = self.peak_rss = 0

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        tree, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending += children.get(pid, [])
        return tree

    @staticmethod
    def _sizes(pid: int) -> tuple[int, int]:
        pss = rss = 0
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
        except OSError:
            pass
        return pss, rss

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            sizes = [self._sizes(pid) for pid in self._tree()]
            self.peak_pss = max(self.peak_pss, sum(s[0] for s in sizes))
            self.peak_rss = max(self.peak_rss, sum(s[1] for s in sizes))


def measured(command: list[str], env: dict[str, str]) -> tuple[float, TreeMemory, str]:
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    memory = TreeMemory(process.pid)
    memory.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - began
    memory.stopping.set()
    memory.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{output[-3000:]}")
    return seconds, memory, output


def run_kubetrain(data: Path, rows: int, store_mb: int, work: Path) -> dict[str, float]:
    manifest = work / "job.yaml"
    manifest.write_text(json.dumps(job_manifest(data, "scale")))
    output = work / "out"
    env = {**os.environ, "KUBETRAIN_RAY_IDLE_SECONDS": "0",
           "KUBETRAIN_OBJECT_STORE_MB": str(store_mb),
           "KUBETRAIN_RAY_TMPDIR": str(work / "ray")}  # fmt: skip
    command = [sys.executable, "-m", "kubetrain.cli", "run", str(manifest), "--output", str(output)]
    seconds, memory, _ = measured(command, env)
    metrics = json.loads((output / "metrics.json").read_text())
    timeline = metrics["timelineSeconds"]
    return {
        "seconds": seconds,
        "data_seconds": timeline["data_ready"] - timeline["ray_ready"],
        "peak_pss_gb": memory.peak_pss / 2**30,
        "peak_rss_gb": memory.peak_rss / 2**30,
        "val_accuracy": metrics["final"].get("val_accuracy", float("nan")),
    }


PLAIN = """
import sys, time
import numpy as np, pandas as pd, torch
data, rows = sys.argv[1], int(sys.argv[2])
df = pd.read_parquet(data)
x = df[[f"f{i}" for i in range(16)]].to_numpy(np.float32)
y = df["label"].to_numpy(np.int64)
order = np.random.default_rng(42).permutation(len(x))
cut = int(len(x) * 0.8)
train, val = order[:cut], order[cut:]
mean, std = x[train].mean(0), x[train].std(0)
x = (x - mean) / std
xt, yt = torch.from_numpy(x), torch.from_numpy(y)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
perm = torch.from_numpy(train[np.random.default_rng(0).permutation(len(train))])
for start in range(0, len(perm), 1024):
    idx = perm[start:start + 1024]
    loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    acc = (model(xt[val]).argmax(1) == yt[val]).float().mean().item()
print("ACC", acc)
"""


def run_plain(data: Path, rows: int) -> dict[str, float]:
    seconds, memory, output = measured([sys.executable, "-c", PLAIN, str(data), str(rows)],
                                       dict(os.environ))  # fmt: skip
    accuracy = float(output.split("ACC")[-1].split()[0])
    return {"seconds": seconds, "peak_pss_gb": memory.peak_pss / 2**30,
            "peak_rss_gb": memory.peak_rss / 2**30, "val_accuracy": accuracy}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_250_000, help="rows at 1x")
    parser.add_argument("--store-mb", type=int, default=256, help="the object store's size")
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument(
        "--plain-limit-gb",
        type=float,
        default=8.0,
        help="run pandas + PyTorch only below this table size in memory",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="kt-scale-") as scratch:
        for scale in (int(s) for s in args.scales.split(",")):
            rows = args.rows * scale
            work = Path(scratch) / f"x{scale}"
            data = write_table(work / "data", rows)
            size_gb = rows * ROW_BYTES / 2**30
            row = {"scale": scale, "rows": rows, "table_gb": size_gb,
                   "x_store": size_gb * 2**10 / args.store_mb}  # fmt: skip
            row["kubetrain"] = run_kubetrain(data, rows, args.store_mb, work)
            if size_gb * 4 < args.plain_limit_gb:
                row["plain"] = run_plain(data, rows)
            results.append(row)
            print(json.dumps(row), flush=True)
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args.store_mb)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: list[dict], store_mb: int) -> None:
    base = results[0]
    base_cost = base["kubetrain"]["seconds"] / base["rows"]
    print(f"\nobject store {store_mb} MiB")
    print(
        "| scale | rows | table | x store | kubetrain s | rows/s | cost/row vs 1x | peak PSS "
        "(RSS) GB | peak vs 1x | data s | pandas+torch s | its peak GB | acc kt / plain |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in results:
        kt = row["kubetrain"]
        cost = kt["seconds"] / row["rows"] / base_cost
        peak = kt["peak_pss_gb"] / base["kubetrain"]["peak_pss_gb"]
        plain = row.get("plain")
        plain_s = f"{plain['seconds']:.1f}" if plain else "-"
        plain_m = f"{plain['peak_pss_gb']:.2f}" if plain else "-"
        plain_a = f"{plain['val_accuracy']:.3f}" if plain else "-"
        print(
            f"| {row['scale']}x | {row['rows']:,} | {row['table_gb']:.2f} GB | "
            f"{row['x_store']:.1f} | {kt['seconds']:.1f} | {row['rows'] / kt['seconds']:,.0f} | "
            f"{cost:.2f} | {kt['peak_pss_gb']:.2f} ({kt['peak_rss_gb']:.2f}) | {peak:.2f} | "
            f"{kt['data_seconds']:.1f} | {plain_s} | {plain_m} | "
            f"{kt['val_accuracy']:.3f} / {plain_a} |"
        )


if __name__ == "__main__":
    sys.exit(main())
