"""A database connection lost while a step writes its mail must fail the step, never end it as if it had committed.

The steps that write an entry and its mails (`open_ticket`, `record_and_notify`) put each mail in a savepoint, so
that a template fault holds back neither the entry nor the other mails. psycopg ends a transaction block on a
broken connection without COMMIT and without an error: a step that took the lost connection for a template fault
returned as if its entry were written, and the ticket's audit log had a gap (found by the fault-injection suite,
PostgreSQL stopped under load). Real PostgreSQL: the server terminates the step's own backend mid-step.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activities import TicketActivities
from activities.mail import SmtpSettings
from tests.conftest import SURVEY_LINKS, wall_clock
from tests.test_ack_in_open_step import OPENING, opening, run_open
from tests.test_notices_in_step import outbox, reminder_step, run_step
from tests.test_timers import events
from ticketflow.config import Config, default_config

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


@pytest.fixture
def acts(
    pool: Pool, config: Config, smtp_settings: SmtpSettings, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> TicketActivities:
    """The steps, where the first mail rendered finds its connection terminated by the server, as when PostgreSQL
    stops."""
    acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    render = acts._context
    done = False

    async def lost(conn: AsyncConnection[dict[str, Any]], *args: Any) -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            async with await AsyncConnection.connect(migrated, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return await render(conn, *args)

    monkeypatch.setattr(acts, "_context", lost)
    return acts


async def test_a_reminder_step_whose_connection_is_lost_fails_and_its_retry_writes_it_all(
    pool: Pool, acts: TicketActivities
) -> None:
    step = await reminder_step(acts)  # the opening in it renders no mail
    tid = step.entry.ticket_id
    with pytest.raises(psycopg.OperationalError):  # Temporal retries the step
        await run_step(acts, step)
    assert await events(pool, tid, "sla_reminder") == []  # nothing committed, nothing claimed
    results = await run_step(acts, step, attempt=2)
    assert [r.status for r in results] == ["pending", "pending"]  # a retry leaves delivery to `notify`
    assert [e["event"] for e in await events(pool, tid, "sla_reminder")] == ["sla_reminder"]
    assert len(await outbox(pool, tid, "sla_reminder")) == 2


async def test_an_opening_whose_connection_is_lost_fails_and_its_retry_opens_the_ticket(
    pool: Pool, acts: TicketActivities
) -> None:
    req = opening()
    tid = req.ticket_id
    with pytest.raises(psycopg.OperationalError):
        await run_open(acts, req)
    assert await events(pool, tid) == []  # the ticket was not opened in silence
    result = await run_open(acts, req, attempt=2)
    assert result.routing is not None and result.acknowledgement is not None
    assert [e["event"] for e in await events(pool, tid)] == OPENING
    assert [r["status"] for r in await outbox(pool, tid, "acknowledgement")] == ["pending"]
