"""A local HTTP server standing in for the Kubernetes API in the operator's I/O unit tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def start_fake_api(
    handler: Any, path: str = "/{tail:.*}", method: str = "*"
) -> tuple[web.AppRunner, str]:
    """A local HTTP server answering ``path`` with ``handler``: (runner to clean up, base URL)."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
