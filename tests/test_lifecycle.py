"""The whole lifecycle on the time-skipping server with real Postgres and SMTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import TicketClient
from starter.smtp_sink import SmtpSink
from tests.conftest import WorkerFactory, mail_settled, wall_clock
from tests.factories import ticket
from ticketflow.config import Config, default_config
from ticketflow.models import Status

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest.fixture(scope="module")
def config() -> Config:
    """These tests are about lifecycle mechanics in calendar hours; business hours: test_sla.py."""
    return wall_clock(default_config())


def mails_for(smtp: SmtpSink, ticket_id: str) -> list[Any]:
    return [m for m in smtp.messages if f"#{ticket_id}" in m.subject or f"#{ticket_id}" in m.text()]


async def audit(pool: Pool, ticket_id: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, event, actor, detail FROM audit_log WHERE ticket_id = %s ORDER BY seq", (ticket_id,)
        )
        return await cur.fetchall()


async def test_full_lifecycle(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        opened = await tickets.open(
            ticket(
                subject="Invoice charged twice",
                body="You charged my credit card twice for invoice 1234. Please refund.",
            )
        )
        assert not opened.duplicate
        state = await tickets.wait_for(opened.ticket_id, Status.OPEN)
        assert state.department == "billing" and state.category == "billing"
        assert state.priority == "high"  # "charged twice" rule
        assert state.tier == 1 and state.assignee in {"james", "carmen"}
        assert any("charged twice" in r for r in state.categorisation_reasons)

        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT * FROM tickets WHERE id = %s", (opened.ticket_id,))).fetchone()
        assert row is not None and row["status"] == "open" and row["department"] == "billing"
        assert row["customer_email"] == "ada@example.com"

        await mail_settled(ts_client, opened.ticket_id)
        acks = [m for m in mails_for(smtp, opened.ticket_id) if "We received your request" in m.subject]
        assert len(acks) == 1
        assert acks[0].rcpt_tos == ["ada@example.com"]
        assert acks[0].subject == f"[#{opened.ticket_id}] We received your request: Invoice charged twice"
        assert "billing@northwind.example" in acks[0].mail_from
        assert acks[0].html() and "Invoice charged twice" in acks[0].html()

        state = await tickets.reply(opened.ticket_id, agent="james", body="Refund issued, sorry about that.")
        assert state.first_response_at is not None
        assert state.sla["first_response"].fulfilled_at is not None
        await mail_settled(ts_client, opened.ticket_id)
        reply_mail = [m for m in mails_for(smtp, opened.ticket_id) if m.subject.startswith("Re:")]
        assert len(reply_mail) == 1 and "Refund issued" in reply_mail[0].text()
        assert reply_mail[0].message["In-Reply-To"] == f"<ack.{opened.ticket_id}@ticketflow>"

        state = await tickets.resolve(opened.ticket_id, agent="james", resolution="refunded")
        assert state.status == Status.RESOLVED and state.resolutions == 1

        await ts_env.sleep(timedelta(minutes=235))  # billing asks 4 hours after (the default is 1 hour)
        await mail_settled(ts_client, opened.ticket_id)
        assert not [m for m in mails_for(smtp, opened.ticket_id) if "How did we do" in m.subject]
        await ts_env.sleep(timedelta(minutes=6))
        await mail_settled(ts_client, opened.ticket_id)
        surveys = [m for m in mails_for(smtp, opened.ticket_id) if "How did we do" in m.subject]
        assert len(surveys) == 1
        assert "http://survey.test/survey/" in surveys[0].text()  # a signed link, not "reply with a number"

        state = await tickets.rate(opened.ticket_id, 5, comment="quick and friendly")
        assert state.ratings[-1].score == 5 and state.ratings[-1].agent == "james"
        assert state.ratings[-1].department == "billing" and state.ratings[-1].tier == 1

        await ts_env.sleep(timedelta(hours=168))  # the survey window
        final = await tickets.final_state(opened.ticket_id)
        assert final.status == Status.CLOSED

    async with pool.connection() as conn:
        rating = await (
            await conn.execute(
                "SELECT score, agent, tier, department FROM csat_ratings WHERE ticket_id = %s", (opened.ticket_id,)
            )
        ).fetchone()
        status = await (
            await conn.execute("SELECT status, closed_at FROM tickets WHERE id = %s", (opened.ticket_id,))
        ).fetchone()
    assert rating == {"score": 5, "agent": "james", "tier": 1, "department": "billing"}
    assert status is not None and status["status"] == "closed" and status["closed_at"] is not None

    events = await audit(pool, opened.ticket_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "audit log has gaps"
    names = [e["event"] for e in events]
    assert names[:4] == ["created", "categorised", "routed", "opened"]
    for expected in ("agent_reply", "resolved", "survey_sent", "rated", "closed"):
        assert expected in names
