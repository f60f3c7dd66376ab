"""The acknowledgement in the opening step (patch "ack-in-open-step"): its outbox row commits with the ticket, and
the step makes the first delivery attempt, so an opening is one activity and two workflow tasks. A mail not
delivered there (the relay down or silent, a retried step, a template fault, a worker from before the change that
ignores the request) stays pending and goes on in the background through `notify`; nothing is lost and nothing is
sent twice. Real PostgreSQL, real SMTP servers (aiosmtpd, and a socket that never answers), the time-skipping
server and the dev server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import TicketActivities
from activities import tickets as ticket_activities
from activities.mail import SmtpSettings
from starter.client import TicketClient
from starter.devstack import free_port
from starter.smtp_sink import SmtpSink
from tests.conftest import SURVEY_LINKS, mail_settled, recorded_client, wall_clock
from tests.factories import ticket
from tests.test_notices_in_step import outbox, scheduled
from tests.test_timers import events, open_ticket
from ticketflow import contract
from ticketflow.config import AutomationRule, Config, default_config
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import Notification, OpenRequest, OpenResult
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
OPENING = ["created", "categorised", "routed", "opened"]


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


def opening(template: str = "acknowledgement") -> OpenRequest:
    """What the workflow asks of the step for a new ticket."""
    tid = ticket_id_for(None)
    ack = Notification(key=f"ack:{tid}", ticket_id=tid, template=template, to="customer")
    return OpenRequest(ticket_id=tid, raw=ticket(), at=datetime.now(UTC), acknowledge=ack)


async def run_open(acts: TicketActivities, req: OpenRequest, attempt: int = 1) -> OpenResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return await env.run(acts.open_ticket, req)


def delivered(smtp: SmtpSink, tid: str) -> Counter[str]:
    return Counter(m.message_id for m in smtp.messages if f"#{tid}" in m.subject)


async def test_the_opening_step_delivers_the_acknowledgement_once_however_often_it_runs(
    pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings
) -> None:
    acts = TicketActivities(pool, config, smtp_settings)
    req = opening()
    tid = req.ticket_id
    first = await run_open(acts, req)
    assert first.acknowledgement is not None and first.acknowledgement.status == "sent"
    assert first.acknowledgement.message_id == f"<ack.{tid}@ticketflow>"
    again = await run_open(acts, req, attempt=2)  # a retry after a lost reply
    assert again.acknowledgement is not None and again.acknowledgement.status == "already_sent"
    assert [(r["status"], r["attempts"], r["interrupted"]) for r in await outbox(pool, tid, "acknowledgement")] == [
        ("sent", 1, 0)
    ]
    assert [e["event"] for e in await events(pool, tid)] == OPENING
    assert list(delivered(smtp, tid).values()) == [1]


async def test_a_retried_opening_leaves_delivery_to_notify_and_sends_nothing_twice(
    pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings
) -> None:
    """A step retried after its first attempt timed out (a slow relay, a lost result) only makes sure of the row:
    the first attempt may still be delivering, and the ticket should not wait on the relay twice."""
    acts = TicketActivities(pool, config, smtp_settings)
    req = opening()
    tid = req.ticket_id
    result = await run_open(acts, req, attempt=2)
    assert result.acknowledgement is not None and result.acknowledgement.status == "pending"
    assert [r["status"] for r in await outbox(pool, tid, "acknowledgement")] == ["pending"]
    assert not delivered(smtp, tid)
    assert req.acknowledge is not None
    assert (await ActivityEnvironment().run(acts.notify, req.acknowledge)).status == "sent"  # what the workflow does
    result = await run_open(acts, req, attempt=3)
    assert result.acknowledgement is not None and result.acknowledgement.status == "already_sent"
    assert [e["event"] for e in await events(pool, tid)] == OPENING  # written once
    assert list(delivered(smtp, tid).values()) == [1]


async def test_a_silent_relay_holds_the_opening_for_the_inline_timeout_only(
    pool: Pool, config: Config, silent_relay: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ticket_activities, "INLINE_SMTP_TIMEOUT", 0.5)  # 5 s in production; the test waits less
    acts = TicketActivities(pool, config, SmtpSettings(host="127.0.0.1", port=silent_relay, timeout=20))
    req = opening()
    result = await asyncio.wait_for(run_open(acts, req), 10)
    assert result.routing is not None and result.acknowledgement is not None
    assert result.acknowledgement.status == "pending"
    [row] = await outbox(pool, req.ticket_id, "acknowledgement")
    assert (row["status"], row["attempts"], row["attempt_open"]) == ("pending", 1, False)
    assert "Timeout" in (row["last_error"] or ""), row


async def test_after_a_failed_attempt_the_worker_leaves_mail_to_notify_for_a_while(
    pool: Pool, config: Config, silent_relay: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening runs inside the ticket's workflow task: a relay that never answers must not cost every ticket
    opened meanwhile the inline timeout. After one failed attempt the worker's steps attempt nothing for
    INLINE_PAUSE_SECONDS; their mails stay pending for `notify`, then attempts resume."""
    monkeypatch.setattr(ticket_activities, "INLINE_SMTP_TIMEOUT", 0.5)
    acts = TicketActivities(pool, config, SmtpSettings(host="127.0.0.1", port=silent_relay, timeout=20))
    now = [1000.0]
    acts.clock = lambda: now[0]

    async def attempts_at_opening() -> int:
        req = opening()
        result = await asyncio.wait_for(run_open(acts, req), 10)
        assert result.acknowledgement is not None and result.acknowledgement.status == "pending"
        [row] = await outbox(pool, req.ticket_id, "acknowledgement")
        assert row["status"] == "pending"
        return int(row["attempts"])

    assert await attempts_at_opening() == 1  # times out on the silent relay
    now[0] += ticket_activities.INLINE_PAUSE_SECONDS - 1
    assert await attempts_at_opening() == 0  # left to notify at once
    now[0] += 1
    assert await attempts_at_opening() == 1  # the pause is over: the next one tries again


async def test_an_acknowledgement_that_does_not_render_holds_back_no_part_of_the_opening(
    pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings
) -> None:
    """A template fault must not keep the ticket from opening: the ticket, its routing and its entries commit,
    and the mail goes to `notify`, which fails on it (and the workflow records why)."""
    acts = TicketActivities(pool, config, smtp_settings)
    req = opening(template="no_such_template")
    tid = req.ticket_id
    result = await run_open(acts, req)
    assert result.routing is not None and result.acknowledgement is not None
    assert result.acknowledgement.status == "pending"
    assert [e["event"] for e in await events(pool, tid)] == OPENING
    assert await outbox(pool, tid, "no_such_template") == []  # no half-written row
    assert req.acknowledge is not None
    with pytest.raises(Exception, match="no_such_template"):
        await ActivityEnvironment().run(acts.notify, req.acknowledge)
    assert not delivered(smtp, tid)


async def test_a_relay_down_at_the_opening_hands_the_acknowledgement_to_the_background(
    ts_env: WorkflowEnvironment, ts_client: Client, pool: Pool, config: Config, task_queue: str
) -> None:
    relay = SmtpSink(port=free_port())  # down until the ticket has opened
    tickets = TicketClient(ts_client, task_queue)
    smtp = SmtpSettings(host="127.0.0.1", port=relay.port, timeout=2)
    try:
        async with build_worker(ts_client, task_queue, pool, config, smtp, survey_links=SURVEY_LINKS):
            tid = await open_ticket(tickets)
            [row] = await outbox(pool, tid, "acknowledgement")
            assert row["status"] == "pending" and "Connect" in (row["last_error"] or ""), row
            relay.start()
            await ts_env.sleep(timedelta(minutes=5, seconds=30))  # notify retries every 5 min at most
            await mail_settled(ts_client, tid)
            history = await ts_client.get_workflow_handle(workflow_id(tid)).fetch_history()
    finally:
        relay.stop()
    assert scheduled(history) == {"open_ticket (local)": 1, "notify": 1}
    [row] = await outbox(pool, tid, "acknowledgement")
    assert row["status"] == "sent" and row["interrupted"] == 0
    assert list(delivered(relay, tid).values()) == [1]


class WorkerBeforeTheChange(TicketActivities):
    """`open_ticket` as a worker from before "ack-in-open-step" runs it in a rolling upgrade: its `OpenRequest`
    has no `acknowledge` (pydantic drops the unknown field) and its `OpenResult` no `acknowledgement`."""

    @activity.defn(name=contract.OPEN_TICKET)
    async def open_ticket(self, req: OpenRequest) -> OpenResult:
        return await super().open_ticket(req.model_copy(update={"acknowledge": None}))


async def test_a_worker_from_before_the_change_leaves_the_acknowledgement_to_notify(
    dev_client: Client, pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings, task_queue: str
) -> None:
    acts = WorkerBeforeTheChange(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    async with recorded_client(dev_client) as client:
        async with build_worker(client, task_queue, pool, config, smtp_settings, activities=acts):
            tid = await open_ticket(TicketClient(client, task_queue))
            await mail_settled(client, tid)
            history = await client.get_workflow_handle(workflow_id(tid)).fetch_history()
    assert scheduled(history) == {"open_ticket (local)": 1, "notify": 1}
    assert [r["status"] for r in await outbox(pool, tid, "acknowledgement")] == ["sent"]
    assert list(delivered(smtp, tid).values()) == [1]


async def test_a_ticket_closed_as_spam_is_not_acknowledged_whatever_was_asked(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    """The workflow asks for the acknowledgement before the rules have run; a ticket they close as spam gets none.
    (An imported ticket, acknowledged by the help desk it came from, is not asked for: `test_import.py`.)"""
    spam_everything = AutomationRule.model_validate(
        {
            "name": "all-spam",
            "conditions": [{"field": "channel", "op": "in", "value": ["email"]}],
            "actions": {"spam": True},
        }
    )
    acts = TicketActivities(pool, config.model_copy(update={"automation": [spam_everything]}), smtp_settings)
    req = opening()
    result = await run_open(acts, req)
    assert result.categorisation.spam and result.routing is None and result.acknowledgement is None
    assert await outbox(pool, req.ticket_id, "acknowledgement") == []
