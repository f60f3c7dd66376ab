"""Opening a ticket in one step: one activity, one transaction, written once however often it runs.

The step replaced five activities (intake, categorise, load_policy, route and the `opened` entry) to cut
the history and workflow tasks per ticket (bench.intake measures the gain). What it must keep: a retry
after a commit repeats the first attempt's decisions and writes nothing twice, a failure half-way leaves
nothing behind, and the workflow's clocks are the ones the step recorded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import TicketActivities
from activities.mail import SmtpSettings
from starter.client import TicketClient
from tests.conftest import SURVEY_LINKS, StartRecorder, mail_settled, terminate_leftovers
from tests.factories import ticket
from tests.test_e2e import poll
from tests.test_notices_in_step import scheduled
from ticketflow import contract
from ticketflow.config import AutomationRule, Config, WorkflowSandbox
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import (
    AuditEntry,
    BounceReport,
    EntryWithNotices,
    MessageRecord,
    Notification,
    OpenRequest,
    OpenResult,
    RouteRequest,
    Routing,
    Status,
    TicketState,
)
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


async def rows(pool: Pool, tid: str) -> dict[str, Any]:
    async with pool.connection() as conn:

        async def all_of(sql: str) -> list[dict[str, Any]]:
            return await (await conn.execute(sql, (tid,))).fetchall()

        return {
            "ticket": await all_of("SELECT status, department, priority, tier, assignee FROM tickets WHERE id = %s"),
            "audit": await all_of("SELECT seq, event FROM audit_log WHERE ticket_id = %s ORDER BY seq"),
            "routing": await all_of("SELECT step, agent FROM routing_decisions WHERE ticket_id = %s"),
            "sla": await all_of(
                "SELECT metric, event, elapsed_seconds, target_seconds, business FROM sla_events"
                " WHERE ticket_id = %s ORDER BY metric"
            ),
            "messages": await all_of("SELECT seq FROM messages WHERE ticket_id = %s ORDER BY seq"),
        }


def created_count(department: str, priority: str, category: str) -> float:
    labels = {"event": "created", "channel": "email", "department": department, "priority": priority}
    return REGISTRY.get_sample_value("ticketflow_tickets_total", {**labels, "category": category}) or 0.0


async def test_a_retried_opening_repeats_its_decisions_and_writes_nothing_twice(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    acts = TicketActivities(pool, config, smtp_settings)
    tid, at = ticket_id_for(None), datetime.now(UTC)
    req = OpenRequest(ticket_id=tid, raw=ticket(subject="Refund for invoice 77", body="Charged twice."), at=at)

    before = created_count("billing", "high", "billing")
    first = await acts.open_ticket(req)
    assert first.policy is not None and first.routing is not None and first.audit_seq == 4
    cat = first.categorisation
    assert (cat.department, str(cat.priority), cat.category) == ("billing", "high", "billing")
    assert created_count("billing", "high", "billing") == before + 1
    # What a retry does when the first attempt committed but its reply was lost, here on a worker whose rules
    # changed meanwhile (a deploy): every ticket is spam to them. The decisions already taken stand.
    spam_everything = AutomationRule.model_validate(
        {
            "name": "all-spam",
            "conditions": [{"field": "channel", "op": "in", "value": ["email"]}],
            "actions": {"spam": True},
        }
    )
    redeployed = TicketActivities(pool, config.model_copy(update={"automation": [spam_everything]}), smtp_settings)
    other = OpenRequest(ticket_id=ticket_id_for(None), raw=ticket(), at=at)
    assert (await redeployed.open_ticket(other)).categorisation.spam  # the new rules do bite on a new ticket
    again = await redeployed.open_ticket(req)

    assert again == first.model_copy(update={"intake": first.intake.model_copy(update={"already_existed": True})})
    assert created_count("billing", "high", "billing") == before + 1  # counted once, not twice
    found = await rows(pool, tid)
    assert [(a["seq"], a["event"]) for a in found["audit"]] == [
        (1, "created"),
        (2, "categorised"),
        (3, "routed"),
        (4, "opened"),
    ]
    assert found["ticket"] == [
        {
            "status": "open",
            "department": cat.department,
            "priority": str(cat.priority),
            "tier": 1,
            "assignee": first.routing.agent,
        }
    ]
    assert found["routing"] == [{"step": "route:3", "agent": first.routing.agent}]
    assert len(found["messages"]) == 1
    clocks = first.policy.opening_clocks(at)  # what the workflow keeps is what was recorded as started
    assert found["sla"] == [
        {
            "metric": m,
            "event": "started",
            "elapsed_seconds": 0.0,
            "target_seconds": c.target_seconds,
            "business": c.business,
        }
        for m, c in sorted(clocks.items())
    ]


class FailingRoute(TicketActivities):
    """Routing fails once, after intake and categorisation have run inside the same transaction."""

    failures = 1

    async def _route(
        self, conn: AsyncConnection[dict[str, Any]], req: RouteRequest, known: dict[str, Any] | None = None
    ) -> tuple[Routing, dict[str, Any] | None]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database went away mid-step")
        return await super()._route(conn, req, known)


async def test_an_opening_that_fails_half_way_leaves_nothing_and_the_retry_writes_it_whole(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    acts = FailingRoute(pool, config, smtp_settings)
    tid = ticket_id_for(None)
    req = OpenRequest(ticket_id=tid, raw=ticket(), at=datetime.now(UTC))

    with pytest.raises(ConnectionError):
        await acts.open_ticket(req)
    assert await rows(pool, tid) == {"ticket": [], "audit": [], "routing": [], "sla": [], "messages": []}

    opened = await acts.open_ticket(req)  # the activity's retry
    assert not opened.intake.already_existed  # nothing of the failed attempt survived to be found
    found = await rows(pool, tid)
    assert [a["event"] for a in found["audit"]] == ["created", "categorised", "routed", "opened"]
    assert len(found["routing"]) == 1 and len(found["sla"]) == 2


class Watching(TicketActivities):
    """Notes the ticket row each part of a step is handed next to the row the database holds at that moment, read
    in the same transaction: the parts hand the row on instead of reading it again (a round trip each)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []

    async def _held(
        self, conn: AsyncConnection[dict[str, Any]], what: str, tid: str, row: dict[str, Any] | None
    ) -> None:
        held = await (await conn.execute("SELECT * FROM tickets WHERE id = %s", (tid,))).fetchone()
        self.handed.append((what, row, held))

    async def _assign(
        self, conn: AsyncConnection[dict[str, Any]], dept: Any, req: RouteRequest, queue: str, ticket: dict[str, Any]
    ) -> Routing:
        await self._held(conn, "route", req.ticket_id, ticket)
        return await super()._assign(conn, dept, req, queue, ticket)

    async def _prepare(
        self, conn: AsyncConnection[dict[str, Any]], note: Notification, known: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        await self._held(conn, note.template, note.ticket_id, known)
        return await super()._prepare(conn, note, known)


REMINDER = {"metric": "first_response", "fraction": 0.5, "target_seconds": 1800, "elapsed_seconds": 900.0}


async def test_each_part_of_a_step_sees_the_ticket_as_the_part_before_left_it(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    acts = Watching(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    tid = ticket_id_for(None)
    ack = Notification(key=f"ack:{tid}", ticket_id=tid, template="acknowledgement", to="customer")
    raw = ticket(subject="Refund for invoice 77", body="Charged twice.")
    req = OpenRequest(ticket_id=tid, raw=raw, at=datetime.now(UTC), acknowledge=ack)
    opened = await ActivityEnvironment().run(acts.open_ticket, req)
    assert opened.routing is not None and opened.routing.agent is not None
    [(_, routed, held_then), (_, acked, held_at_ack)] = acts.handed
    assert routed is not None and routed == held_then and routed["category"] == "billing"  # categorised, not as created
    assert acked is not None and acked == held_at_ack
    assert (acked["status"], acked["assignee"]) == ("open", opened.routing.agent)

    # An entry that hands the ticket to someone else, with a notice to its assignee: the new one gets the mail.
    others = [a for a in config.departments["billing"].agents if a.id != opened.routing.agent]
    acts.handed.clear()
    entry = AuditEntry(
        ticket_id=tid,
        seq=5,
        event="assigned",
        actor="lead",
        at=datetime.now(UTC),
        ticket_update={"assignee": others[0].id},
    )
    note = Notification(
        key=f"assigned:{tid}:5", ticket_id=tid, template="sla_reminder", to="assignee", context=REMINDER
    )
    await ActivityEnvironment().run(acts.record_and_notify, EntryWithNotices(entry=entry, notes=[note]))
    [(_, handed, held)] = acts.handed
    assert handed is not None and handed == held and handed["assignee"] == others[0].id
    async with pool.connection() as conn:
        mail = await (await conn.execute("SELECT recipient FROM outbox WHERE key = %s", (note.key,))).fetchone()
    assert mail == {"recipient": others[0].email}


def timer_started(history: WorkflowHistory) -> bool:
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)


@pytest.mark.parametrize("sandbox", ["strict", "shared", "off"])
async def test_a_new_ticket_opens_in_one_workflow_task(
    dev_client: Client,
    pool: Pool,
    config: Config,
    smtp_settings: SmtpSettings,
    task_queue: str,
    sandbox: WorkflowSandbox,
) -> None:
    """On the real server, under each sandbox setting, the history of an opening: one `open_ticket`, a local
    activity that also delivers the acknowledgement, in the one workflow task, and one patch marker (each patch
    marker also costs a visibility write)."""
    recorder = StartRecorder()
    client_config = dev_client.config()
    client_config["interceptors"] = [recorder]
    client = Client(**client_config)
    tickets = TicketClient(client, task_queue)
    acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    try:
        async with build_worker(client, task_queue, pool, config, smtp_settings, activities=acts, sandbox=sandbox):
            tid = (await tickets.open(ticket())).ticket_id
            # The history as the opening left it, read before anything queries the ticket: a query that comes
            # while the step runs has the SDK finish the workflow task early to answer it, and the step's result
            # then arrives in a second one.
            history = await poll(client.get_workflow_handle(workflow_id(tid)).fetch_history, timer_started, 30)
            state = await tickets.wait_for(tid, Status.OPEN)
            await mail_settled(client, tid)
    finally:
        await terminate_leftovers(client, recorder.ids)
    assert scheduled(history) == {"open_ticket (local)": 1}
    assert state.tier == 1 and state.assignee and {c.metric for c in state.clocks} >= {"first_response", "resolution"}
    assert state.mail_in_flight == 0
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status, attempts FROM outbox WHERE key = %s", (f"ack:{tid}",))
        assert await cur.fetchall() == [{"status": "sent", "attempts": 1}]
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    assert kinds["WORKFLOW_TASK_COMPLETED"] == 1, kinds  # started, opened and acknowledged
    assert kinds["ACTIVITY_TASK_SCHEDULED"] == 0, kinds
    # the newest patch stands for all the earlier ones; the other marker is the local activity's
    assert kinds["MARKER_RECORDED"] == 2, kinds
    assert kinds["UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"] == 2, kinds  # the patch marker's and the ticket's own
    assert kinds["TIMER_STARTED"] == 1, kinds
    assert len(history.events) == 9, kinds


async def test_an_audit_number_held_by_another_entry_fails_the_step_instead_of_skipping_it(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    """A retry writes the same entry again and is skipped. After a reset, though, a ticket's run can take another
    path than the one its audit log holds, and want a number already taken by a different entry: skipping
    that one would lose it in silence. It fails, naming both entries, and writes nothing of its own."""
    acts = TicketActivities(pool, config, smtp_settings)
    tid, at = ticket_id_for(None), datetime.now(UTC)
    seq = (await acts.open_ticket(OpenRequest(ticket_id=tid, raw=ticket(), at=at))).audit_seq + 1
    reply = AuditEntry(
        ticket_id=tid,
        seq=seq,
        event="agent_reply",
        actor="anna",
        at=at,
        message=MessageRecord(author_kind="agent", author="anna", body="Please try the export again."),
    )
    await acts.record_event(reply)
    await acts.record_event(reply)  # a retry after a lost reply: skipped, as ever
    other_path = AuditEntry(ticket_id=tid, seq=seq, event="escalated", actor="system", at=at, ticket_update={"tier": 2})
    with pytest.raises(ApplicationError) as refused:
        await acts.record_event(other_path)
    assert refused.value.type == contract.AUDIT_DIVERGED and not refused.value.non_retryable
    assert f"audit entry {seq} of ticket {tid} already holds 'agent_reply', this run writes 'escalated'" in str(
        refused.value
    )
    written = await rows(pool, tid)
    assert written["audit"][-1] == {"seq": seq, "event": "agent_reply"} and len(written["audit"]) == seq
    assert written["messages"] == [{"seq": 1}, {"seq": seq}]  # the customer's opening message, and the reply
    assert written["ticket"][0]["tier"] == 1  # the refused entry's update was not applied


class HeldOpening(TicketActivities):
    """An opening step that waits for the test's word after it began: the window in which the acknowledgement's
    bounce can come back while the ticket is still opening."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.began, self.go = asyncio.Event(), asyncio.Event()

    @activity.defn(name=contract.OPEN_TICKET)
    async def open_ticket(self, req: OpenRequest) -> OpenResult:
        self.began.set()
        await self.go.wait()
        return await super().open_ticket(req)


async def test_a_bounce_reported_while_the_ticket_opens_is_recorded_after_the_opening(
    dev_client: Client, pool: Pool, config: Config, smtp_settings: SmtpSettings, task_queue: str
) -> None:
    """`report_bounce` is the one update a ticket still opening accepts. Its entry waits for the opening step:
    taken at once it would claim audit number 1, the `created` entry's, while the step runs, and the ticket would
    retry a diverged audit log for ever."""
    acts = HeldOpening(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    tickets = TicketClient(dev_client, task_queue)
    async with build_worker(dev_client, task_queue, pool, config, smtp_settings, activities=acts):
        tid = (await tickets.open(ticket())).ticket_id
        await asyncio.wait_for(acts.began.wait(), 30)
        # Delivered in the workflow task that follows the heartbeat of the one running the step (at 8 s of its 10 s
        # timeout), and accepted at the next heartbeat, while the step still waits.
        bounce = await tickets.handle(tid).start_update(
            contract.REPORT_BOUNCE,
            BounceReport(message_id=f"<ack.{tid}@ticketflow>", diagnostic="550 5.1.1 no such user"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=TicketState,
        )
        acts.go.set()
        state = await asyncio.wait_for(bounce.result(), 60)
        await mail_settled(dev_client, tid)
    assert state.status == Status.OPEN and state.audit_seq == 5
    found = await rows(pool, tid)
    assert [a["event"] for a in found["audit"]] == [
        "created",
        "categorised",
        "routed",
        "opened",
        "notification_bounced",
    ]
    assert [a["seq"] for a in found["audit"]] == [1, 2, 3, 4, 5]
