"""``python -m kubetrain_operator``: run the operator (its process-level tuning is public, so
that the scale benchmark's reference operator runs with the same).

Flags override the config file (``--config`` or ``$KUBETRAIN_OPERATOR_CONFIG``). Liveness
is kopf's own endpoint (``/healthz``), Prometheus metrics are on ``metricsPort``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence

#: Allocations between two young-generation collections (Python's default: 700).
GC_ALLOCATIONS = 20_000


def hide_unused_clients() -> None:
    """kopf probes for the official Kubernetes clients at import and loads them when they
    are installed (about 50 MB and a slower start); this operator brings its own client."""
    for name in ("kubernetes", "kubernetes_asyncio", "pykube"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetrain_operator")
    parser.add_argument("--config", help="operator config YAML (node pools, namespaces, ...)")
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace"
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz")
    parser.add_argument("--metrics-port", type=int, help="override metricsPort (0 = off)")
    parser.add_argument("--peering", help="override peeringName (kopf peering object)")
    parser.add_argument("--priority", type=int, help="override peeringPriority")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    from kubetrain.errors import UserError

    from .config import load_config

    overrides: dict[str, object] = {}
    if args.namespace:
        overrides["namespaces"] = args.namespace
    if args.metrics_port is not None:
        overrides["metricsPort"] = args.metrics_port
    if args.peering is not None:
        overrides["peeringName"] = args.peering or None
    if args.priority is not None:
        overrides["peeringPriority"] = args.priority
    try:  # before kopf is even imported: a bad flag or file fails at once, in one line
        config = load_config(args.config, overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    hide_unused_clients()
    import kopf

    from .handlers import build_registry

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf's per-object INFO lines ("Timer ... succeeded") cost CPU at scale and say little.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    tune_gc()
    loop = new_loop()
    kopf.run(
        loop=loop,
        registry=build_registry(config),
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=config.peeringName is None,
        peering_name=config.peeringName,
        priority=config.peeringPriority,
        liveness_endpoint=args.liveness or None,
        identity=operator_identity(),
    )
    return 0


def operator_identity() -> str:
    """kopf's peering identity. kopf derives it from the login name, which a container that
    runs as a uid without a passwd entry (the chart's 65532, OpenShift's random uids) lacks:
    getpwuid() then raises, and the operator crash-loops at start."""
    return f"kubetrain-{os.getuid()}@{socket.gethostname()}"


def tune_gc() -> None:
    """Fewer garbage collections: at a thousand jobs the cyclic collector, run every 700
    allocations by default and scanning every live object in its full passes, was ~11% of
    the operator's CPU. Objects alive at start (modules, config) are frozen out of the scans;
    generation 0 is collected every GC_ALLOCATIONS allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_ALLOCATIONS, 20, 20)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about 10% less CPU at scale), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    sys.exit(main())
