"""Timer-driven behaviour on the time-skipping server: tier escalation, SLA reminders and breach,
pauses, reopen and CSAT. Days of simulated time run in milliseconds; no test sleeps for real."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from starter.client import InvalidTransition, TicketClient
from starter.smtp_sink import SmtpSink
from tests.conftest import WorkerFactory, wall_clock
from tests.factories import ticket
from ticketflow import contract
from ticketflow.config import Config, default_config
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import Status, TicketWorkflowInput

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
NORMAL = {"subject": "Question about my account", "body": "Hello, where can I change the name on my account?"}
URGENT = {"subject": "URGENT: production down", "body": "Our production is down, this is an emergency."}


@pytest.fixture(scope="module")
def config() -> Config:
    """These tests are about lifecycle mechanics in calendar hours; business hours: test_sla.py."""
    return wall_clock(default_config())


def mails(smtp: SmtpSink, ticket_id: str, fragment: str = "") -> list[Any]:
    return [m for m in smtp.messages if f"#{ticket_id}" in m.subject and fragment in m.subject]


async def events(pool: Pool, ticket_id: str, *names: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, event, actor, detail, at FROM audit_log WHERE ticket_id = %s ORDER BY seq", (ticket_id,)
        )
        rows = await cur.fetchall()
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), f"audit log of {ticket_id} has gaps or duplicates: {seqs}"
    return [r for r in rows if not names or r["event"] in names]


async def open_ticket(tickets: TicketClient, **fields: Any) -> str:
    opened = await tickets.open(ticket(**fields))
    await tickets.wait_for(opened.ticket_id, Status.OPEN)
    return opened.ticket_id


async def test_escalates_through_every_tier_by_timer(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **NORMAL)
        state = await tickets.get(tid)
        assert state.department == "customer_service" and state.tier == 1
        assert state.assignee in {"ioana", "liam", "nikos"}
        # Budgets: tier 1 = 4 h, tier 2 = 8 h, tier 3 = 24 h, tier 4 = 48 h.
        await ts_env.sleep(timedelta(hours=3, minutes=59))
        assert (await tickets.get(tid)).tier == 1
        await ts_env.sleep(timedelta(minutes=2))
        state = await tickets.get(tid)
        assert state.tier == 2 and state.assignee in {"nikos", "olga"}
        await ts_env.sleep(timedelta(hours=8))
        state = await tickets.get(tid)
        assert state.tier == 3 and state.assignee == "olga"
        await ts_env.sleep(timedelta(hours=24))
        state = await tickets.get(tid)
        assert state.tier == 4 and state.assignee == "andrei"
        assert [(e.from_tier, e.to_tier, e.cause) for e in state.escalations] == [
            (1, 2, "timer"),
            (2, 3, "timer"),
            (3, 4, "timer"),
        ]
        await ts_env.sleep(timedelta(hours=49))
        state = await tickets.get(tid)
        assert state.tier == 4 and len(state.escalations) == 3  # nowhere higher to go

    escalated = await events(pool, tid, "escalated", "tier_budget_exhausted")
    assert [(e["event"], e["detail"].get("to_tier")) for e in escalated] == [
        ("escalated", 2),
        ("escalated", 3),
        ("escalated", 4),
        ("tier_budget_exhausted", None),
    ]
    notices = mails(smtp, tid, "Escalated to tier")
    recipients = sorted(r for m in notices for r in m.rcpt_tos)
    # the tier-2/3/4 assignees, the lead on reaching tier 4 and when tier 4's budget is spent
    assert recipients.count("andrei.popescu@northwind.example") == 3
    assert "olga@northwind.example" in recipients
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT tier, assignee FROM tickets WHERE id = %s", (tid,))).fetchone()
    assert row == {"tier": 4, "assignee": "andrei"}


async def test_sla_reminders_then_breach(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **URGENT)
        state = await tickets.get(tid)
        assert state.priority == "urgent" and state.sla["first_response"].target_seconds == 30 * 60
        await ts_env.sleep(timedelta(minutes=14))
        assert await events(pool, tid, "sla_reminder") == []
        await ts_env.sleep(timedelta(minutes=2))  # 16 min: past 50 %
        reminders = await events(pool, tid, "sla_reminder")
        assert [(r["detail"]["metric"], r["detail"]["fraction"]) for r in reminders] == [("first_response", 0.5)]
        assert len(mails(smtp, tid, "first_response at 50%")) == 1
        await ts_env.sleep(timedelta(minutes=15))  # 31 min: past 75 %, 90 % and the target
        state = await tickets.get(tid)
        assert state.sla_breached and state.sla["first_response"].breached
        assert not state.sla["resolution"].breached

    fired = [
        (e["event"], e["detail"]["fraction"])
        for e in await events(pool, tid, "sla_reminder", "sla_breach")
        if e["detail"]["metric"] == "first_response"
    ]
    assert fired == [("sla_reminder", 0.5), ("sla_reminder", 0.75), ("sla_reminder", 0.9), ("sla_breach", 1.0)]
    breach_mails = mails(smtp, tid, "SLA BREACHED")
    assignee = f"{state.assignee}@northwind.example"
    assert sorted(r for m in breach_mails for r in m.rcpt_tos) == sorted([assignee, "ines.weber@northwind.example"])
    assert len(breach_mails) == 2  # assignee and department lead
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT sla_breached FROM tickets WHERE id = %s", (tid,))).fetchone()
    assert row == {"sla_breached": True}


async def test_first_reply_meets_the_sla(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **URGENT)
        await ts_env.sleep(timedelta(minutes=10))
        await tickets.reply(tid, "anna", "We are on it.")
        await ts_env.sleep(timedelta(hours=1))
        state = await tickets.get(tid)
    first = state.sla["first_response"]
    assert first.fulfilled_at is not None and not first.breached
    assert 599 <= first.elapsed(first.fulfilled_at) <= 601  # 10 minutes, to the second
    assert [e["detail"]["metric"] for e in await events(pool, tid, "sla_reminder", "sla_breach")].count(
        "first_response"
    ) == 0


async def test_pause_while_waiting_toward_a_threshold_skips_nothing(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    """Regression for the Alga PSA bug: a pause that arrives while the workflow sleeps toward a
    threshold must neither skip that reminder nor the breach after resuming."""
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **URGENT)
        await ts_env.sleep(timedelta(minutes=14))  # the workflow sleeps toward 50 % (15 min)
        await tickets.pend(tid, "anna", "waiting for logs")
        await ts_env.sleep(timedelta(hours=10))
        state = await tickets.get(tid)
        assert state.status == Status.PENDING and state.sla["first_response"].paused
        assert await events(pool, tid, "sla_reminder", "sla_breach") == []
        await tickets.customer_reply(tid, "Here are the logs.")
        await ts_env.sleep(timedelta(seconds=50))
        assert await events(pool, tid, "sla_reminder") == []  # 14 min 50 s of running time
        await ts_env.sleep(timedelta(seconds=20))
        first = [e["detail"] for e in await events(pool, tid, "sla_reminder")]
        assert [(d["metric"], d["fraction"]) for d in first] == [("first_response", 0.5)]
        assert 900 <= first[0]["elapsed_seconds"] < 901  # fired at exactly 15 running minutes
        await ts_env.sleep(timedelta(minutes=16))
        state = await tickets.get(tid)
        assert state.sla["first_response"].breached
        assert state.tier_clock is not None and state.tier == 1  # tier clock paused too: 30 min of 4 h used
    breach = [e["detail"] for e in await events(pool, tid, "sla_breach") if e["detail"]["metric"] == "first_response"]
    assert len(breach) == 1 and 1800 <= breach[0]["elapsed_seconds"] < 1801
    assert [e["event"] for e in await events(pool, tid, "pended", "customer_reply")] == ["pended", "customer_reply"]


async def test_reopen_within_window_cancels_survey_and_resurveys(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **NORMAL)
        await tickets.reply(tid, "liam", "You can change it under Settings > Profile.")
        await tickets.resolve(tid, "liam")
        await ts_env.sleep(timedelta(minutes=30))  # before the 60-minute survey delay
        state = await tickets.customer_reply(tid, "That menu does not exist for me.")
        assert state.status == Status.OPEN and state.survey_due_at is None
        await ts_env.sleep(timedelta(hours=2))
        assert mails(smtp, tid, "How did we do") == []  # the first resolution's survey was cancelled
        state = await tickets.resolve(tid, "nikos")
        assert state.resolutions == 2
        await ts_env.sleep(timedelta(minutes=61))
        assert len(mails(smtp, tid, "How did we do")) == 1
        await tickets.rate(tid, "bad", comment="took two tries")
        state = await tickets.rate(tid, 4)  # changed within the window: last wins
        assert [(r.resolution, r.score, r.agent) for r in state.ratings] == [(2, 4, "nikos")]
        await ts_env.sleep(timedelta(hours=169))
        final = await tickets.final_state(tid)
    assert final.status == Status.CLOSED
    names = [e["event"] for e in await events(pool, tid)]
    assert names.count("resolved") == 2 and names.count("reopened") == 1 and names.count("survey_sent") == 1
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT resolution, score, raw, agent FROM csat_ratings WHERE ticket_id = %s", (tid,))
        ).fetchall()
    assert row == [{"resolution": 2, "score": 4, "raw": "4", "agent": "nikos"}]


async def test_manual_escalation_and_invalid_transitions(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_ticket(tickets, **NORMAL)
        with pytest.raises(InvalidTransition, match="cannot rate a ticket that is open"):
            await tickets.rate(tid, 5)
        with pytest.raises(InvalidTransition, match="cannot reopen"):
            await tickets.reopen(tid, "liam")
        for n in (2, 3, 4):
            state = await tickets.escalate(tid, "liam", f"needs tier {n}")
            assert state.tier == n
        with pytest.raises(InvalidTransition, match="already at tier 4"):
            await tickets.escalate(tid, "liam", "more")
        assert [e.cause for e in state.escalations] == ["manual"] * 3
        assert state.escalations[0].reason == "liam: needs tier 2"
        await tickets.resolve(tid, "andrei")
        with pytest.raises(InvalidTransition, match="cannot resolve a ticket that is resolved"):
            await tickets.resolve(tid, "andrei")
    escalations = await events(pool, tid, "escalated")
    assert [e["actor"] for e in escalations] == ["manual"] * 3


async def test_duplicate_message_opens_one_ticket(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    payload = ticket(**NORMAL)
    async with make_worker(ts_client, task_queue):
        first = await tickets.open(payload)
        second = await tickets.open(payload)  # the mail gateway delivered the same message twice
        assert not first.duplicate and second.duplicate and first.ticket_id == second.ticket_id
        await tickets.wait_for(first.ticket_id, Status.OPEN)
        await tickets.resolve(first.ticket_id, "liam")
        await ts_env.sleep(timedelta(hours=170))
        await tickets.final_state(first.ticket_id)
        third = await tickets.open(payload)  # even after the ticket closed
        assert third.duplicate and third.ticket_id == first.ticket_id
    async with pool.connection() as conn:
        count = await (
            await conn.execute(
                "SELECT count(*) AS n FROM tickets WHERE external_message_id = %s", (payload["external_message_id"],)
            )
        ).fetchone()
    assert count == {"n": 1}
    assert len(mails(smtp, first.ticket_id, "We received your request")) == 1


async def test_invalid_payload_is_rejected_inside_the_workflow_too(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    """An integration that bypasses the client SDK still gets field-level errors, from the intake
    activity, and nothing is persisted."""
    bad = ticket(customer={"email": "not-an-address"}, channel="fax")
    tid = ticket_id_for(bad["external_message_id"])
    async with make_worker(ts_client, task_queue):
        handle = await ts_client.start_workflow(
            contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=bad), id=workflow_id(tid), task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TICKET
    assert "customer.email: value is not a valid email address" in cause.message
    assert "channel: Input should be 'email', 'web_form', 'chat', 'phone', 'social' or 'api'" in cause.message
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT 1 FROM tickets WHERE id = %s", (tid,))).fetchone()
    assert row is None
