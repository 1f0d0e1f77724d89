"""kopf handler registration, and nothing else: each handler is one line that delegates.

A registry is built per config, so tests and the benchmark can run operators with
different configs in one process.

- ``follow`` is a daemon per TrainingJob: it re-reads the actual state whenever the job or
  its pods change (pods come from the operator's own watch, ``podwatch.py``, not from a
  kopf index: see there why), and on a schedule, and converges (no chain of field-change
  handlers, so a missed event loses nothing).
"""

from __future__ import annotations

from typing import Any

import kopf

from kubetrain.api.v1alpha1 import GROUP, PLURAL, VERSION

from . import lifecycle
from .config import OperatorConfig


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        lifecycle.configure(settings, memo, config)

    @kopf.on.login(id="login", registry=registry)
    async def login(memo: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
        return await lifecycle.login(memo, settings, **kwargs)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await lifecycle.cleanup(memo)

    @kopf.daemon(GROUP, VERSION, PLURAL, id="follow", cancellation_timeout=10, registry=registry)
    async def follow(body: kopf.Body, memo: Any, logger: Any, stopped: Any, **_: Any) -> None:
        await lifecycle.follow(body, memo, logger, stopped)

    return registry
