"""The ``kubetrain`` command line.

It imports only pydantic and PyYAML at start, so ``validate`` and ``crd`` are instant and
work where Ray and torch are not installed; ``run`` imports the runtime when it is used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
