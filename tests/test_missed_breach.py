"""Found by the fault-injection suite: while the relay was down the acknowledgement kept retrying, the
lifecycle never reached its timers, and an agent's late reply met the first-response clock with no
breach on record, so it counted as met in time. A clock met after its target is now recorded as
breached at that moment (patch "breach-before-fulfil"); nobody is paged after the fact."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from activities import TicketActivities
from activities.mail import SmtpSettings
from starter.client import TicketClient
from starter.devstack import free_port
from tests.conftest import SURVEY_LINKS, StartRecorder, start_time_skipping, terminate_leftovers, wall_clock
from tests.factories import ticket
from tests.test_replay import HISTORIES, RECORDING_AS
from ticketflow import contract
from ticketflow.config import default_config
from ticketflow.ids import workflow_id
from ticketflow.models import AgentReply, Status
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server: the test terminates a workflow mid-activity, after which the Java
    test server can stop skipping time for the tests that follow."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


async def test_a_breach_its_timer_missed_is_recorded_when_the_clock_is_met(
    ts_env: WorkflowEnvironment, pool: Pool, task_queue: str
) -> None:
    config = wall_clock(default_config())
    dev_client = ts_env.client
    relay_down = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2)
    acts = TicketActivities(pool, config, relay_down, survey_links=SURVEY_LINKS)
    recorder = StartRecorder()
    client_config = dev_client.config()
    client_config["interceptors"] = [recorder]
    client = Client(**client_config)
    tickets = TicketClient(client, task_queue)
    try:
        async with build_worker(client, task_queue, pool, config, relay_down, activities=acts):
            tid = (await tickets.open(ticket())).ticket_id
            await tickets.wait_for(tid, Status.OPEN)
            await ts_env.sleep(timedelta(hours=6))  # far past the target, the acknowledgement still retrying
            before = await tickets.get(tid)
            assert not before.sla["first_response"].breached  # the scenario: the timer never got its turn
            # The reply's own mail cannot go out either, so the update would wait for the relay: take it
            # as accepted, then watch its records land.
            handle = client.get_workflow_handle(workflow_id(tid))
            await handle.start_update(
                contract.AGENT_REPLY,
                AgentReply(agent="anna", body="Sorry for the wait: it is fixed."),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            deadline = asyncio.get_running_loop().time() + 30
            while not (state := await tickets.get(tid)).sla["first_response"].fulfilled_at:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.3)
            assert state.sla["first_response"].breached and state.sla_breached
            history = await handle.fetch_history()
    finally:
        await terminate_leftovers(client, recorder.ids)
    async with pool.connection() as conn:
        audit = await (
            await conn.execute(
                "SELECT detail FROM audit_log WHERE ticket_id = %s AND event = 'sla_breach' ORDER BY seq", (tid,)
            )
        ).fetchall()
        clock = await (
            await conn.execute(
                "SELECT event FROM sla_events WHERE ticket_id = %s AND metric = 'first_response' ORDER BY seq",
                (tid,),
            )
        ).fetchall()
    assert [(a["detail"]["metric"], a["detail"]["noticed"]) for a in audit] == [
        ("first_response", "when the clock was met")
    ]
    assert [c["event"] for c in clock] == ["started", "breached", "fulfilled"]
    if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / f"{RECORDING_AS}--breach-recorded-when-met.json").write_text(history.to_json(), "utf-8")
