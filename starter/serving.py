"""Running one of the inbound servers on its own until SIGTERM/SIGINT (the intake CLI commands)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, Self

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from starter.client import TicketClient
from ticketflow.config import Settings


async def _metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


METRICS_ROUTE = Route("/metrics", _metrics, methods=["GET"])  # this process's counters, for Prometheus


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def serve_until_signal(settings: Settings, start: Callable[[TicketClient], Awaitable[Stoppable]]) -> None:
    tickets = await TicketClient.connect(settings.temporal_address, settings.temporal_namespace, settings.task_queue)
    await run_until_signal(await start(tickets))


async def run_until_signal(server: Stoppable) -> None:
    """Keep a started server up until SIGTERM or SIGINT, then stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that handles its own signals (ticketflow dev, the CLI)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AsgiServer:
    """An ASGI app served by uvicorn on the caller's event loop (the HTTP intake, the survey pages)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (port in use, ...)
                raise RuntimeError("the server stopped at once")
            await asyncio.sleep(0.05)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
