"""Found by the fault-injection suite: while the relay was down the acknowledgement kept retrying, the
lifecycle never reached its timers, and an agent's late reply met the first-response clock with no
breach on record, so it counted as met in time. Two fixes, each tested here:

- mail goes out in the background (patch "mail-in-background"), so a relay outage holds no timer:
  the breach fires on time;
- a clock met after its target is recorded as breached at that moment, whatever held the lifecycle up
  (patch "breach-before-fulfil"); nobody is paged after the fact. A failing database write holds it
  up here (the first reminder's audit entry), now that mail no longer can."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
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
from ticketflow.config import SlaOverride, default_config
from ticketflow.ids import workflow_id
from ticketflow.models import AgentReply, AuditEntry, EntryWithNotices, NotificationResult, Status
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server: the test terminates a workflow mid-activity, after which the Java
    test server can stop skipping time for the tests that follow."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


class ReminderNotWritten(TicketActivities):
    """A fault in one write: the first SLA reminder's audit entry fails while `holding`. The lifecycle
    retries it inside its timer handling, so it cannot get to the breach, while the agent's reply,
    accepted meanwhile, waits its turn and then goes through."""

    holding = True

    @activity.defn(name=contract.RECORD_EVENT)
    async def record_event(self, entry: AuditEntry) -> None:
        self._fail(entry)
        await super().record_event(entry)

    @activity.defn(name=contract.RECORD_AND_NOTIFY)
    async def record_and_notify(self, step: EntryWithNotices) -> list[NotificationResult]:
        self._fail(step.entry)  # a reminder is written with its staff mails since "notices-in-step"
        return await super().record_and_notify(step)

    def _fail(self, entry: AuditEntry) -> None:
        if self.holding and entry.event == "sla_reminder":
            raise RuntimeError("injected: the write of the reminder fails")


async def breach_records(pool: Pool, tid: str) -> tuple[list[Any], list[str]]:
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
    return [(a["detail"]["metric"], a["detail"].get("noticed")) for a in audit], [c["event"] for c in clock]


async def audit_has(pool: Pool, tid: str, event: str) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM audit_log WHERE ticket_id = %s AND event = %s", (tid, event))
        return await cur.fetchone() is not None


def recording_client(env: WorkflowEnvironment) -> tuple[Client, StartRecorder]:
    recorder = StartRecorder()
    client_config = env.client.config()
    client_config["interceptors"] = [recorder]
    return Client(**client_config), recorder


async def test_a_relay_outage_holds_no_sla_timer(ts_env: WorkflowEnvironment, pool: Pool, task_queue: str) -> None:
    config = wall_clock(default_config())
    relay_down = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=2)
    client, recorder = recording_client(ts_env)
    tickets = TicketClient(client, task_queue)
    try:
        async with build_worker(client, task_queue, pool, config, relay_down, survey_links=SURVEY_LINKS):
            tid = (await tickets.open(ticket())).ticket_id
            await tickets.wait_for(tid, Status.OPEN)
            await ts_env.sleep(timedelta(hours=6))  # far past the target, the acknowledgement still retrying
            before = await tickets.get(tid)
            assert before.sla["first_response"].breached  # the timer fired on time, the relay down or not
            # the agent's reply returns at once; its mail waits behind the acknowledgement
            state = await asyncio.wait_for(tickets.reply(tid, "anna", "Sorry for the wait: it is fixed."), 10)
            assert state.sla["first_response"].fulfilled_at is not None
            history = await client.get_workflow_handle(workflow_id(tid)).fetch_history()
    finally:
        await terminate_leftovers(client, recorder.ids)
    audit, clock = await breach_records(pool, tid)
    assert audit == [("first_response", None)]  # noticed by its timer, not afterwards
    assert clock[0] == "started" and clock[-2:] == ["breached", "fulfilled"]
    async with pool.connection() as conn:
        outbox = await (
            await conn.execute("SELECT key, status, attempts FROM outbox WHERE ticket_id = %s ORDER BY key", (tid,))
        ).fetchall()
    assert {r["status"] for r in outbox} == {"pending"} and any(r["key"] == f"ack:{tid}" for r in outbox)
    if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / f"{RECORDING_AS}--breach-on-time-while-the-relay-is-down.json").write_text(
            history.to_json(), "utf-8"
        )


async def test_a_breach_its_timer_missed_is_recorded_when_the_clock_is_met(
    ts_env: WorkflowEnvironment, pool: Pool, task_queue: str
) -> None:
    base = wall_clock(default_config())
    # targets of minutes, so the retries of the failing write (one workflow task each) stay few
    config = base.model_copy(
        update={"sla": base.sla.model_copy(update={"overrides": [SlaOverride(name="minutes", factor=0.05)]})}
    )
    acts = ReminderNotWritten(pool, config, SmtpSettings(host="127.0.0.1", port=free_port()), survey_links=SURVEY_LINKS)
    client, recorder = recording_client(ts_env)
    tickets = TicketClient(client, task_queue)
    try:
        async with build_worker(client, task_queue, pool, config, acts.smtp, activities=acts):
            tid = (await tickets.open(ticket())).ticket_id
            await tickets.wait_for(tid, Status.OPEN)
            await ts_env.sleep(timedelta(minutes=6))  # past the 3-minute target, the reminder's write retrying
            before = await tickets.get(tid)
            assert not before.sla["first_response"].breached  # the scenario: the breach never got its turn
            # The reply is accepted at once (its validator passes) and queues for the lifecycle's lock.
            handle = client.get_workflow_handle(workflow_id(tid))
            await handle.start_update(
                contract.AGENT_REPLY,
                AgentReply(agent="anna", body="Sorry for the wait: it is fixed."),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            acts.holding = False  # the database heals: the reminder lands, then the reply meets the clock
            await ts_env.sleep(timedelta(minutes=2))  # the write's next retry is at most a minute away
            deadline = asyncio.get_running_loop().time() + 30
            while not (state := await tickets.get(tid)).sla["first_response"].fulfilled_at:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.3)
            assert state.sla["first_response"].breached and state.sla_breached
            await ts_env.sleep(timedelta(minutes=10))
            history = await handle.fetch_history()
    finally:
        await terminate_leftovers(client, recorder.ids)
    audit, clock = await breach_records(pool, tid)
    assert audit == [("first_response", "when the clock was met")]  # once: the late timer adds nothing
    assert clock == ["started", "reminder", "breached", "fulfilled"]
    if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / f"{RECORDING_AS}--breach-recorded-when-met.json").write_text(history.to_json(), "utf-8")
