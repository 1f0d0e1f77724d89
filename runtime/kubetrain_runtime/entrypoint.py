"""The Ray job entrypoint on a cluster's head pod, as the operator submits it:

    python -m kubetrain_runtime.entrypoint --spec /etc/kubetrain/trainingjob.yaml --reporter log

It joins the running cluster (``ray.init(address="auto")``), runs the job with the chosen
reporter(s) (``log``, ``status``, or both as ``log,status``) and exits 0 on success, 1 when
training failed (3 when a worker ran out of memory), 2 with one line on stderr when the job
or its data is wrong.
Outputs go to ``--output``, else ``spec.output.uri``, else ``$KUBETRAIN_OUTPUT_ROOT/<name>``
(default ``./runs/<name>`` in the job's working directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetrain.api.contract import ENV_OUTPUT_ROOT, default_output_uri
from kubetrain.errors import EXIT_OUT_OF_MEMORY, UserError


def output_uri(name: str, spec_uri: str | None, override: str | None) -> str:
    return default_output_uri(name, spec_uri, override, os.environ.get(ENV_OUTPUT_ROOT))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubetrain_runtime.entrypoint", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--spec", required=True, help="the TrainingJob manifest (YAML)")
    parser.add_argument(
        "--reporter", default="log", help="rich, log, status, or several: log,status"
    )
    parser.add_argument("--output", help="output URI (overrides spec.output.uri)")
    parser.add_argument(
        "--local", action="store_true", help="start a private Ray instead of joining one"
    )
    args = parser.parse_args(argv)
    try:
        from kubetrain.api.manifests import load_training_job
        from kubetrain.api.v1alpha1 import Artifacts
        from kubetrain_runtime.driver_log import copied_to
        from kubetrain_runtime.job import RunOptions, preflight, process_started, run_job
        from kubetrain_runtime.ray_env import ray_session
        from kubetrain_runtime.reporting import create_reporter
        from kubetrain_runtime.storage import normalize_uri

        job = load_training_job(Path(args.spec))
        reporter = create_reporter(args.reporter, job)
        uri = normalize_uri(output_uri(job.metadata.name, job.spec.output.uri, args.output))
        try:
            train_function = preflight(job, Path.cwd(), uri)
        except UserError as exc:  # the operator learns why from the event, too
            reporter.finished(False, {}, Artifacts(), str(exc))
            raise
        with copied_to(uri) as log_uri, ray_session(local=args.local) as session:
            options = RunOptions(
                uri, Path.cwd(), None, local=args.local, started=process_started(),
                log_uri=log_uri, train_function=train_function,
            )  # fmt: skip
            summary = run_job(job, reporter, options, session)
        if summary.succeeded:
            return 0
        return EXIT_OUT_OF_MEMORY if summary.out_of_memory else 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
