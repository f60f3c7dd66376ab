"""A long-lived ticket: hundreds of messages keep each run's history bounded by continuing as new,
carrying the state (message bodies stay in PostgreSQL), and nothing is lost across the runs. Months of
timers do the same on the time-skipping server, and every timer keeps its instant across the runs.

The dev server here suggests continue-as-new after 300 events (the default is thousands), so a few
hundred messages exercise what thousands do in production.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

from starter.client import TicketClient
from starter.devstack import TemporalDevServer, free_port, wait_for_temporal
from tests.conftest import WorkerFactory, start_time_skipping, wall_clock
from tests.factories import ticket
from tests.test_replay import HISTORIES, RECORDING_AS, replayer
from tests.test_timers import events
from ticketflow.config import Config, default_config
from ticketflow.ids import workflow_id
from ticketflow.models import Status
from ticketflow.temporal import connect

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
SUGGEST_AFTER = 300  # events
PENDING_REMINDER = timedelta(days=2)  # the default policy's reminder to a customer we wait on
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

    await events(pool, tid)  # no gap and no duplicate across the runs
    async with pool.connection() as conn:
        bodies = await (
            await conn.execute(
                "SELECT count(*) AS n FROM messages WHERE ticket_id = %s AND body LIKE 'Attempt %%'", (tid,)
            )
        ).fetchone()
    assert bodies == {"n": EXCHANGES}

    for run_id, history in histories.items():
        await replayer().replay_workflow(history)
        if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
            kind = "continued-as-new-run" if any(w.run_id == run_id for w in continued) else "last-run"
            path = HISTORIES / f"{RECORDING_AS}--long-lived-{kind}.json"
            if not path.exists():
                path.write_text(WorkflowHistory(history.workflow_id, history.events).to_json(), "utf-8")


async def timer_rows(pool: Pool, tid: str) -> list[dict[str, Any]]:
    """Every reminder and breach the ticket's timers wrote, with the instant its clock (or wait) began and
    whether it came exactly when due."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT event, at, detail FROM audit_log WHERE ticket_id = %s"
                " AND event IN ('pending_reminder_sent', 'sla_reminder', 'sla_breach') ORDER BY seq",
                (tid,),
            )
        ).fetchall()
    out = []
    began: datetime | None
    for r in rows:
        d, began = r["detail"], None
        if r["event"] == "pending_reminder_sent":
            began = datetime.fromisoformat(d["pending_since"])
            exact = abs(r["at"] - began - PENDING_REMINDER) <= timedelta(seconds=1)
        else:  # a clock's reminder or breach: its elapsed time is the fraction of the target it is for
            exact = abs(d["elapsed_seconds"] - d["fraction"] * d["target_seconds"]) <= 1
            # next reply runs unpaused from the customer's message: it began `elapsed` before the reminder
            if d["metric"] == "next_reply":
                began = r["at"] - timedelta(seconds=d["elapsed_seconds"])
        out.append({**r, "began": began, "exact": exact, "kind": d.get("metric", "pending")})
    return out


async def test_a_ticket_waiting_on_its_customer_for_months_keeps_every_timer_across_runs(
    make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    """Months of timers, on the time-skipping server (a server of its own; it suggests continuing as new after
    about 4,000 events). Each cycle the customer writes; the next-reply clock (2 hours for this high-priority
    ticket) reminds at 1, 1.5 and 1.8 hours and breaches at 2; the agent answers and waits on the customer, who
    is reminded two days later; the resolution clock adds up the open hours, reminds, breaches and escalates.
    The runs continue as new until one begins while a timer is armed. Every reminder and breach must come
    once, exactly when due, including that one."""
    env = await start_time_skipping()
    try:
        tickets = TicketClient(env.client, task_queue)
        async with make_worker(env.client, task_queue):
            tid = (await tickets.open(ticket(subject="The export stops half way"))).ticket_id
            await tickets.wait_for(tid, Status.OPEN)
            handle = env.client.get_workflow_handle(workflow_id(tid))
            cycles, run_starts = 0, list[datetime]()
            opened_at = (await tickets.get(tid)).created_at
            across: list[dict[str, Any]] = []
            while not across:
                cycles += 1
                await tickets.customer_reply(tid, f"It stopped again (attempt {cycles}).")
                await env.sleep(timedelta(hours=2, minutes=30))  # every next-reply reminder, and the breach
                await tickets.reply(tid, "anna", "Could you send us the export log?", pend=True)
                await env.sleep(PENDING_REMINDER + timedelta(hours=1))
                first = (await handle.fetch_history()).events[0]
                if first.workflow_execution_started_event_attributes.continued_execution_run_id:
                    began = first.event_time.ToDatetime(tzinfo=UTC)
                    if began not in run_starts:
                        run_starts.append(began)
                        rows = await timer_rows(pool, tid)
                        across = [r for r in rows if r["began"] is not None and r["began"] < began < r["at"]]
                assert len(run_starts) <= 5 and cycles < 1_000, f"no run began with a timer armed: {run_starts}"
            state = await tickets.get(tid)
            history = await handle.fetch_history()
            await tickets.resolve(tid, "anna")
            await env.sleep(timedelta(days=30))  # survey window and closing
            final = await tickets.final_state(tid)
    finally:
        await env.shutdown()

    rows = await timer_rows(pool, tid)
    print(
        f"\n{cycles} cycles over {len(run_starts) + 1} runs and {(rows[-1]['at'] - opened_at).days} days;"
        f" {len(rows)} reminders and breaches; the last run had {len(history.events)} events; a"
        f" {across[0]['kind']} timer armed at {across[0]['began']} fired at {across[0]['at']} in the run begun at"
        f" {run_starts[-1]}"
    )
    assert final.status == Status.CLOSED
    assert state.messages == 1 + 2 * cycles
    assert len(state.model_dump_json()) < 20_000, "workflow state must not grow with the months"
    assert len(history.events) < 1_000, "each run starts small again"
    # no gap and no duplicate in the audit log across the runs, and the resolution breach escalated
    assert await events(pool, tid, "escalated")
    once = Counter((r["kind"], r["detail"]["fraction"]) for r in rows if r["kind"] in ("first_response", "resolution"))
    expected = {(k, f): 1 for k in ("first_response", "resolution") for f in (0.5, 0.75, 0.9, 1.0)}
    assert once == expected, "each clock that lives once reminds and breaches once, in whichever run"
    kinds = [r["kind"] for r in rows]
    assert kinds.count("pending") == cycles, f"{kinds.count('pending')} reminders for {cycles} waits"
    # next reply starts with the first customer message after the first response: every cycle but the first
    assert kinds.count("next_reply") == 4 * (cycles - 1), "3 reminders and a breach each cycle, no more, no fewer"
    assert not [r for r in rows if not r["exact"]], "timers that fired off their instant"
