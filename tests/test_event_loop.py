"""The worker's event loop setting (TICKETFLOW_EVENT_LOOP): each value runs its loop, and an install without
uvloop is told what to do rather than shown a traceback. The worker process itself on each loop:
tests/test_health.py (SIGTERM drains it on both)."""

from __future__ import annotations

import sys

import pytest

from ticketflow.event_loop import EventLoopUnavailable, run, running_loop


async def which_loop() -> str:
    return running_loop()


def test_each_setting_runs_its_own_loop() -> None:
    assert run(which_loop(), "uvloop") == "uvloop"
    assert run(which_loop(), "asyncio") == "asyncio"


def test_uvloop_missing_is_a_precise_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError, as on Windows
    with pytest.raises(EventLoopUnavailable, match="set TICKETFLOW_EVENT_LOOP=asyncio"):
        run(which_loop(), "uvloop")
    assert run(which_loop(), "asyncio") == "asyncio"  # the other setting still works there
