"""``kubetrain run``: the job on a private local Ray (or ``RAY_ADDRESS``), with a live
terminal display, a summary, and the outputs under ``runs/<name>/`` by default."""

from __future__ import annotations

import sys
from pathlib import Path

from kubetrain.api.contract import default_output_uri
from kubetrain.api.v1alpha1 import TrainingJob
from kubetrain_runtime.job import RunOptions, preflight, process_started, run_job
from kubetrain_runtime.reporting import create_reporter
from kubetrain_runtime.storage import normalize_uri


def default_output(job: TrainingJob, output: str | None) -> str:
    """``--output``, else ``spec.output.uri``, else ``runs/<name>`` in the current folder."""
    return normalize_uri(default_output_uri(job.metadata.name, job.spec.output.uri, output))


def run_local(
    job: TrainingJob, *, workers: int | None, output: str | None, manifest_dir: Path
) -> int:
    """Run a TrainingJob here; 0 when it succeeded, 1 when training failed (with one line
    on stderr). Mistakes in the job or its data raise ``kubetrain.errors.UserError``,
    which the CLI prints as one line."""
    started = process_started()
    output = default_output(job, output)
    train_function = preflight(job, manifest_dir, output)
    reporter = create_reporter("rich", job)
    from kubetrain_runtime.ray_env import describe_local_ray, ray_session

    reporter.step("starting Ray", describe_local_ray())
    with ray_session(local=True) as session:
        options = RunOptions(
            output, manifest_dir, workers, local=True, started=started,
            train_function=train_function,
        )  # fmt: skip
        summary = run_job(job, reporter, options, session)
    if not summary.succeeded:
        print(f"error: {summary.message}", file=sys.stderr)
        return 1
    return 0
