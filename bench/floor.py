"""The floors. The floor: an empty workflow, started with the same input and the same number of starts as the
pipeline; the most the Temporal server and a worker can do on this machine, and the pipeline's yardstick.

The shaped floor: bare Temporal doing what a ticket's opening asks of it, with nothing behind it. One local
activity (a no-op standing for the opening step, which also acknowledges), then a search-attribute upsert and a
timer, all in the first and only workflow task. The pipeline against it is the cost of ticketflow's own work (SQL,
rules, mail) over the orchestration it needs. The activity-shaped floor is the opening's shape before patch
open-as-local-step: the no-op as an activity, so a second workflow task.

The I/O-shaped floor: the shaped floor whose local activity does the least any help desk must do for a ticket, and
nothing else (bench/floor_io.py): one committed INSERT into PostgreSQL, and one prebuilt mail handed to the relay.
No help-desk pipeline on this machine can open tickets faster than it, so its rate against the empty floor's
bounds the ratio any pipeline can reach here."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

FLOOR_WORKFLOW = "BenchFloorWorkflow"
SHAPED_FLOOR_WORKFLOW = "BenchShapedFloorWorkflow"
ACTIVITY_SHAPED_FLOOR_WORKFLOW = "BenchActivityShapedFloorWorkflow"
IO_SHAPED_FLOOR_WORKFLOW = "BenchIoShapedFloorWorkflow"
NOOP_ACTIVITY = "bench_noop"
IO_ACTIVITY = "bench_row_and_mail"  # bench/floor_io.py: kept apart, so no sandbox imports psycopg for a floor
TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")
STEP = timedelta(seconds=30)


@workflow.defn(name=FLOOR_WORKFLOW)
class BenchFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        return None


@activity.defn(name=NOOP_ACTIVITY)
async def bench_noop(ticket: dict[str, Any]) -> dict[str, Any]:
    return ticket


async def _opened() -> None:
    """What the opening's workflow task commands after its step: a search-attribute upsert, and the ticket's first
    SLA timer, started and still running as the workflow completes."""
    workflow.upsert_search_attributes([TICKET_STATUS.value_set("open")])
    timer = asyncio.ensure_future(workflow.sleep(timedelta(hours=1)))
    await asyncio.sleep(0)
    assert not timer.done()


async def _opening(step: str, ticket: dict[str, Any] | None) -> None:
    """The opening's one workflow task: its step as a local activity, then what the task commands after it."""
    await workflow.execute_local_activity(step, ticket or {}, start_to_close_timeout=STEP)
    await _opened()


@workflow.defn(name=SHAPED_FLOOR_WORKFLOW)
class BenchShapedFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        await _opening(NOOP_ACTIVITY, ticket)


@workflow.defn(name=ACTIVITY_SHAPED_FLOOR_WORKFLOW)
class BenchActivityShapedFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        await workflow.execute_activity(NOOP_ACTIVITY, ticket or {}, start_to_close_timeout=STEP)
        await _opened()


@workflow.defn(name=IO_SHAPED_FLOOR_WORKFLOW)
class BenchIoShapedFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        await _opening(IO_ACTIVITY, ticket)
