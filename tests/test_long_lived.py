"""A long-lived ticket: hundreds of messages keep each run's history bounded by continuing as new,
carrying the state (message bodies stay in PostgreSQL), and nothing is lost across the runs.

The dev server here suggests continue-as-new after 300 events (the default is thousands), so a few
hundred messages exercise what thousands do in production.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

from starter.client import TicketClient
from starter.devstack import TemporalDevServer, free_port, wait_for_temporal
from tests.conftest import WorkerFactory, wall_clock
from tests.factories import ticket
from tests.test_replay import HISTORIES, RECORDING_AS, replayer
from ticketflow.config import Config, default_config
from ticketflow.ids import workflow_id
from ticketflow.models import Status
from ticketflow.temporal import connect

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
SUGGEST_AFTER = 300  # events
EXCHANGES = 120  # customer message + agent reply pairs: 241 messages, about 3,000 events


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


@pytest.fixture(scope="module")
def small_history_server() -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(
        port=free_port(),
        ui_port=None,
        extra_args=["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"],
    ).start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(small_history_server: TemporalDevServer) -> AsyncIterator[Client]:
    await wait_for_temporal(small_history_server.address)
    yield await connect(small_history_server.address)


async def test_a_ticket_with_hundreds_of_messages_continues_as_new_and_loses_nothing(
    client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(client, task_queue)
    async with make_worker(client, task_queue):
        tid = (await tickets.open(ticket(subject="Our integration keeps failing"))).ticket_id
        await tickets.wait_for(tid, Status.OPEN)
        for i in range(EXCHANGES):
            await tickets.customer_reply(tid, f"Attempt {i} failed again, log attached " + "x" * 400)
            await tickets.reply(tid, "anna", f"Thanks, change setting {i} and retry.", pend=i % 10 == 9)
        state = await tickets.get(tid)
        await tickets.resolve(tid, "anna")
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id(tid)}'")]
        histories = {
            w.run_id: await client.get_workflow_handle(workflow_id(tid), run_id=w.run_id).fetch_history() for w in runs
        }
    assert state.messages == 1 + 2 * EXCHANGES
    assert len(state.model_dump_json()) < 20_000, "workflow state must not grow with the conversation"
    continued = [w for w in runs if w.status == WorkflowExecutionStatus.CONTINUED_AS_NEW]
    assert len(continued) >= 3, f"expected several runs, got {[(w.run_id, w.status) for w in runs]}"
    lengths = sorted(len(h.events) for h in histories.values())
    assert max(lengths) < SUGGEST_AFTER + 150, lengths  # bounded: each run stops soon after the suggestion

    async with pool.connection() as conn:
        audit = await (
            await conn.execute("SELECT count(*) AS n, max(seq) AS top FROM audit_log WHERE ticket_id = %s", (tid,))
        ).fetchone()
        bodies = await (
            await conn.execute(
                "SELECT count(*) AS n FROM messages WHERE ticket_id = %s AND body LIKE 'Attempt %%'", (tid,)
            )
        ).fetchone()
    assert audit is not None and audit["n"] == audit["top"]  # no gap and no duplicate across the runs
    assert bodies == {"n": EXCHANGES}

    for run_id, history in histories.items():
        await replayer().replay_workflow(history)
        if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
            kind = "continued-as-new-run" if any(w.run_id == run_id for w in continued) else "last-run"
            path = HISTORIES / f"{RECORDING_AS}--long-lived-{kind}.json"
            if not path.exists():
                path.write_text(WorkflowHistory(history.workflow_id, history.events).to_json(), "utf-8")
