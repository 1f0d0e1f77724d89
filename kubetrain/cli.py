"""The ``kubetrain`` command line.

It imports only pydantic and PyYAML at start, so ``validate`` and ``crd`` are instant and
work where Ray and torch are not installed; ``run`` imports the runtime when it is used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubetrain import __version__
from kubetrain.errors import UserError


def _validate(args: argparse.Namespace) -> int:
    """Exit 2 when any document is invalid, like every other user error; each error is one
    line that names the file (and document) and the field."""
    from kubetrain.api.manifests import check_file

    failed = 0
    for name in args.files:
        try:
            checked = check_file(Path(name))
        except UserError as exc:
            failed += 1
            print(f"{exc}", file=sys.stderr)
            continue
        for verdict in checked:
            if verdict.job is None:
                failed += 1
                for error in verdict.errors:
                    print(f"{verdict.where}: {error}", file=sys.stderr)
            elif not args.quiet:
                job = verdict.job
                print(f"{verdict.where}: ok ({job.metadata.name}, {job.spec.model.type})")
    return UserError.exit_code if failed else 0


def _crd(args: argparse.Namespace) -> int:
    from kubetrain.api.crd import render_crd

    text = render_crd()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _run(args: argparse.Namespace) -> int:
    from kubetrain.api.manifests import load_training_job

    job = load_training_job(Path(args.file))
    try:
        from kubetrain_runtime.local import run_local
    except ImportError as exc:
        raise UserError(
            f"the runtime is not installed ({exc.name} missing); "
            "install it with: pip install 'kubetrain[runtime]'"
        ) from None
    return run_local(
        job, workers=args.workers, output=args.output, manifest_dir=Path(args.file).parent
    )


def _datasets(args: argparse.Namespace) -> int:
    """``kubetrain datasets write NAME DIR``: real data to try the file readers on."""
    try:
        from kubetrain_runtime.datasets import write
    except ImportError as exc:
        raise UserError(f"the runtime is not installed ({exc.name} missing)") from None
    if not 1 <= args.scale <= 64:
        raise UserError("--scale must be between 1 and 64")
    print(write(args.name, Path(args.folder), file_format=args.format, scale=args.scale))
    return 0


def _ray(args: argparse.Namespace) -> int:
    """``kubetrain ray status|stop``: the local Ray that ``run`` keeps between runs."""
    try:
        from kubetrain_runtime.local_ray import KeeperFiles, stop
        from kubetrain_runtime.ray_env import temp_dir
    except ImportError as exc:
        raise UserError(f"the runtime is not installed ({exc.name} missing)") from None
    import time

    files = KeeperFiles(Path(temp_dir()))
    state = stop(files) if args.action == "stop" else files.read()
    if state is None:
        print("no local Ray is running")
        return 0
    if args.action == "stop":
        print(f"stopped the local Ray (keeper pid {state.pid}, {state.address})")
        return 0
    up = (time.time() - state.started) / 60
    print(
        f"local Ray at {state.address}: keeper pid {state.pid}, up {up:.0f} min, "
        f"{state.cpus} CPUs, stops after {state.idle_seconds / 60:g} min without a run "
        f"(logs: {temp_dir()}/session_latest/logs)"
    )
    return 0


def _operator(forwarded: list[str]) -> int:
    """Hand every argument to the operator's own parser (argparse cannot forward options)."""
    try:
        from kubetrain_operator.__main__ import main as operator_main
    except ImportError as exc:
        raise UserError(
            f"the operator is not installed ({exc.name} missing); "
            "install it with: pip install 'kubetrain[operator]'"
        ) from None
    return operator_main(forwarded)


def _client(args: argparse.Namespace) -> Any:
    from kubetrain.client import Client

    return Client(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)


def _submit(args: argparse.Namespace) -> int:
    """Validate every file first (nothing is sent when one is wrong), then apply each."""
    from kubetrain.api.manifests import check_file

    jobs, failed = [], False
    for name in args.files:
        for verdict in check_file(Path(name)):
            if verdict.job is None:
                failed = True
                for error in verdict.errors:
                    print(f"{verdict.where}: {error}", file=sys.stderr)
            else:
                jobs.append(verdict.job)
    if failed:
        return UserError.exit_code
    client = _client(args)
    for job in jobs:
        done = client.submit(job)
        print(f"trainingjob.kubetrain.io/{done.name} {done.outcome}")
    if not args.watch:
        return 0
    return max(_watch_one(client, job.metadata.name) for job in jobs)


def _get(args: argparse.Namespace) -> int:
    from kubetrain.jobview import table

    client = _client(args)
    jobs = [client.get(args.name)] if getattr(args, "name", None) else client.list()
    if args.output == "json":
        import json

        print(json.dumps(jobs[0] if getattr(args, "name", None) else jobs, indent=2))
    elif not jobs:
        print(f"No trainingjobs in namespace {client.namespace}.", file=sys.stderr)
    else:
        print(table(jobs))
    return 0


def _watch_one(client: Any, name: str) -> int:
    from kubetrain.api.v1alpha1 import TrainingJob
    from kubetrain.watching import StatusReplay
    from kubetrain_runtime.rich_reporter import RichReporter

    replay: StatusReplay | None = None

    def show(job: dict[str, Any]) -> None:
        nonlocal replay
        if replay is None:  # the first version seen: the display needs the spec
            try:
                model: TrainingJob | None = TrainingJob.model_validate(job)
            except ValueError:
                model = None  # written by a newer kubetrain: show it without its spec
            replay = StatusReplay(RichReporter(model))
        replay.update(job)

    final = client.wait(name, on_change=show)
    if final.phase == "Failed":
        print(f"error: trainingjob {name} failed: {final.message or ''}", file=sys.stderr)
        return 1
    return 0


def _watch(args: argparse.Namespace) -> int:
    return _watch_one(_client(args), args.name)


def _logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.follow:
        for chunk in client.follow_logs(args.name):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return 0
    text, source = client.logs(args.name)
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    print(f"(driver log: {source})", file=sys.stderr)
    return 0


def _describe(args: argparse.Namespace) -> int:
    from kubetrain.jobview import describe

    client = _client(args)
    print(describe(client.get(args.name), client.events(args.name)))
    return 0


def _change(action: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        client = _client(args)
        getattr(client, action)(args.name)
        done = {"suspend": "suspended", "resume": "resumed", "delete": "deleted"}[action]
        print(f"trainingjob.kubetrain.io/{args.name} {done}")
        return 0

    return handler


def _add_cluster_commands(sub: Any) -> None:
    """Commands on jobs in a cluster, with kubectl's kubeconfig, context and namespace."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="default: $KUBECONFIG, else ~/.kube/config")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")

    def command(name: str, help_text: str, handler: Any, *, job: bool = True) -> Any:
        parser = sub.add_parser(name, help=help_text, parents=[common])
        if job:
            parser.add_argument("name", metavar="NAME")
        parser.set_defaults(handler=handler)
        return parser

    submit = command("submit", "create or update TrainingJobs in the cluster", _submit, job=False)
    submit.add_argument("files", nargs="+", metavar="FILE", help="manifest files; - reads stdin")
    submit.add_argument("-w", "--watch", action="store_true", help="then watch until they end")
    get = command("get", "a table of one job, or of all in the namespace", _get, job=False)
    get.add_argument("name", metavar="NAME", nargs="?")
    get.add_argument("-o", "--output", choices=["table", "json"], default="table")
    listing = command("list", "a table of the namespace's jobs", _get, job=False)
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    command("watch", "live progress until the job ends (exit 1 if it failed)", _watch)
    logs = command("logs", "the Ray driver's log (the saved copy once the cluster is gone)", _logs)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    command("describe", "conditions, data statistics, metrics, artifacts, events", _describe)
    command("suspend", "stop the job's pods, keeping its checkpoints", _change("suspend"))
    command("resume", "start a suspended job again, from its last checkpoint", _change("resume"))
    command("delete", "delete the job and everything it created", _change("delete"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetrain",
        description="Train PyTorch models with Ray, locally or on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"kubetrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check TrainingJob manifests without a cluster")
    validate.add_argument("files", nargs="+", metavar="FILE", help="manifest files; - reads stdin")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    validate.set_defaults(handler=_validate)

    crd = sub.add_parser("crd", help="print the TrainingJob CustomResourceDefinition")
    crd.add_argument("-o", "--output", help="write to this file instead of stdout")
    crd.set_defaults(handler=_crd)

    run = sub.add_parser("run", help="run a TrainingJob here, on an embedded local Ray")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--workers", type=int, help="training workers (overrides the spec)")
    run.add_argument("--output", help="output directory (overrides the spec)")
    run.set_defaults(handler=_run)

    ray = sub.add_parser("ray", help="show or stop the local Ray that `run` keeps between runs")
    ray.add_argument("action", choices=["status", "stop"])
    ray.set_defaults(handler=_ray)

    datasets = sub.add_parser(
        "datasets", help="write a bundled dataset as files (PNG class folders, CSV, Parquet)"
    )
    datasets.add_argument("action", choices=["write"])
    datasets.add_argument(
        "name", help="digits-png (images in class folders), or a table: digits, iris, wine, "
        "co2, gunpoint",
    )  # fmt: skip
    datasets.add_argument("folder", metavar="DIR")
    datasets.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                          help="for tables (default parquet)")  # fmt: skip
    datasets.add_argument("--scale", type=int, default=1,
                          help="digits-png: enlarge the 8x8 images this many times")  # fmt: skip
    datasets.set_defaults(handler=_datasets)

    _add_cluster_commands(sub)

    # Listed for --help only: main() forwards `operator ...` before argparse sees it.
    sub.add_parser("operator", help="run the operator (`kubetrain operator --help`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["operator"]:
            return _operator(argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
