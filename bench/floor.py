"""The floors. The floor: an empty workflow, started with the same input and the same number of starts as the
pipeline; the most the Temporal server and a worker can do on this machine, and the pipeline's yardstick.

The shaped floor: bare Temporal doing what a ticket's opening asks of it, with nothing behind it. One activity
(a no-op standing for the opening step, which also acknowledges), then a search-attribute upsert and a timer in
the second and last workflow task. The pipeline against it is the cost of ticketflow's own work (SQL, rules,
mail) over the orchestration it needs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

FLOOR_WORKFLOW = "BenchFloorWorkflow"
SHAPED_FLOOR_WORKFLOW = "BenchShapedFloorWorkflow"
NOOP_ACTIVITY = "bench_noop"
TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")


@workflow.defn(name=FLOOR_WORKFLOW)
class BenchFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        return None


@activity.defn(name=NOOP_ACTIVITY)
async def bench_noop(ticket: dict[str, Any]) -> dict[str, Any]:
    return ticket


@workflow.defn(name=SHAPED_FLOOR_WORKFLOW)
class BenchShapedFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        timeout = timedelta(seconds=30)
        await workflow.execute_activity(NOOP_ACTIVITY, ticket or {}, start_to_close_timeout=timeout)
        workflow.upsert_search_attributes([TICKET_STATUS.value_set("open")])
        # the ticket's first SLA timer: started in this workflow task, still running as the workflow completes
        timer = asyncio.ensure_future(workflow.sleep(timedelta(hours=1)))
        await asyncio.sleep(0)
        assert not timer.done()
