"""Running one of the inbound servers on its own until SIGTERM/SIGINT (the intake CLI commands)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

from starter.client import TicketClient
from ticketflow.config import Settings


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def serve_until_signal(settings: Settings, start: Callable[[TicketClient], Awaitable[Stoppable]]) -> None:
    tickets = await TicketClient.connect(settings.temporal_address, settings.temporal_namespace, settings.task_queue)
    server = await start(tickets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
