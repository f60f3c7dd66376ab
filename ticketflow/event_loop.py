"""The event loop a worker process runs on (TICKETFLOW_EVENT_LOOP).

uvloop runs asyncio's loop on libuv: the worker's sockets (PostgreSQL, SMTP, the metrics scrape) and the Temporal
SDK's callbacks from its Rust threads cost the process less CPU on it (README, Performance). asyncio's own loop
stays a setting away, for a platform without uvloop (Windows) or to rule the loop out when chasing a problem."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

EventLoop = Literal["uvloop", "asyncio"]
DEFAULT_EVENT_LOOP: EventLoop = "uvloop"

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """The event loop asked for cannot run on this install."""


def run(main: Coroutine[Any, Any, T], loop: EventLoop) -> T:
    """`asyncio.run(main)` on the loop named; uvloop's runner sets up and closes its loop as asyncio.run does."""
    if loop == "asyncio":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:
        main.close()  # never awaited: no "coroutine was never awaited" warning on the way out
        raise EventLoopUnavailable(
            "TICKETFLOW_EVENT_LOOP=uvloop needs the uvloop package, which this install lacks (it has no Windows "
            "build): install it, or set TICKETFLOW_EVENT_LOOP=asyncio"
        ) from None
    return uvloop.run(main)


def running_loop() -> str:
    """The running loop, as a log line or a test names it: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
