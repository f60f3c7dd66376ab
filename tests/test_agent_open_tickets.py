"""Each agent's open tickets, kept by a trigger (migration 0011) for least_loaded and skills routing, which read it
by primary key instead of counting the backlog in every opening. The count must equal the tickets it stands for
after every kind of change, whoever writes `tickets`. Real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from activities import TicketActivities
from activities.db import migrate
from activities.mail import SmtpSettings
from tests.test_clocks import new_database
from ticketflow.config import Config
from ticketflow.ids import ticket_id_for
from ticketflow.models import RouteRequest

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
COUNTED = (
    "SELECT assignee AS agent, count(*) AS open FROM tickets WHERE assignee IS NOT NULL"
    " AND status IN ('new', 'open', 'pending') GROUP BY assignee"
)


async def insert(conn: AsyncConnection[Any], status: str, assignee: str | None) -> str:
    tid = ticket_id_for(None)
    await conn.execute(
        "INSERT INTO tickets (id, channel, subject, body, customer_name, customer_email, customer_type, status,"
        " assignee, created_at) VALUES (%s, 'email', 's', 'b', 'n', 'n@example.com', 'regular', %s, %s, now())",
        (tid, status, assignee),
    )
    return tid


async def loads(conn: AsyncConnection[Any], *agents: str) -> tuple[dict[str, int], dict[str, int]]:
    """(kept, counted) for these agents, agents with none left out of both."""
    kept = await (
        await conn.execute("SELECT agent, open FROM agent_open_tickets WHERE agent = ANY(%s)", (list(agents),))
    ).fetchall()
    counted = await (
        await conn.execute(f"SELECT * FROM ({COUNTED}) c WHERE agent = ANY(%s)", (list(agents),))
    ).fetchall()
    return {r["agent"]: r["open"] for r in kept if r["open"]}, {r["agent"]: r["open"] for r in counted}


async def test_the_count_follows_every_change_of_a_ticket(pool: Pool) -> None:
    a, b = f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:
        one = await insert(conn, "open", a)
        two = await insert(conn, "new", None)
        expected = [
            ("assigned on insert", "SELECT 1", (), {a: 1}),
            ("routed", "UPDATE tickets SET assignee = %s WHERE id = %s", (b, two), {a: 1, b: 1}),
            ("pending still counts", "UPDATE tickets SET status = 'pending' WHERE id = %s", (two,), {a: 1, b: 1}),
            ("resolved", "UPDATE tickets SET status = 'resolved' WHERE id = %s", (one,), {b: 1}),
            ("reopened", "UPDATE tickets SET status = 'open' WHERE id = %s", (one,), {a: 1, b: 1}),
            ("transferred", "UPDATE tickets SET assignee = %s WHERE id = %s", (b, one), {b: 2}),
            ("transferred back", "UPDATE tickets SET assignee = %s WHERE id = %s", (a, one), {a: 1, b: 1}),
            ("another column", "UPDATE tickets SET subject = 'x', tier = 2 WHERE id = %s", (one,), {a: 1, b: 1}),
            (
                "closed and moved at once",
                "UPDATE tickets SET status = 'closed', assignee = %s WHERE id = %s",
                (b, one),
                {b: 1},
            ),
            ("unassigned", "UPDATE tickets SET assignee = NULL WHERE id = %s", (two,), {}),
            ("assigned again", "UPDATE tickets SET assignee = %s WHERE id = %s", (a, two), {a: 1}),
            ("deleted", "DELETE FROM tickets WHERE id = ANY(%s)", ([one, two],), {}),
        ]
        for what, statement, params, want in expected:
            await conn.execute(statement, params)
            kept, counted = await loads(conn, a, b)
            assert counted == want, what  # the test's own arithmetic
            assert kept == want, f"after {what!r}: kept {kept}, counted {counted}"
        await conn.commit()
        whole = await (
            await conn.execute(
                f"SELECT * FROM ({COUNTED}) c FULL JOIN agent_open_tickets k USING (agent)"
                " WHERE c.open IS DISTINCT FROM k.open AND (k.open <> 0 OR c.open IS NOT NULL)"
            )
        ).fetchall()
    assert whole == [], "every agent's count, across what every other test wrote to this database"


async def test_the_migration_counts_the_tickets_already_there(postgres_url: str) -> None:
    url = await new_database(postgres_url, upto=10)
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        for status, who in [("open", "ann"), ("new", "ann"), ("pending", "bob"), ("resolved", "bob"), ("open", None)]:
            await insert(conn, status, who)
        await conn.commit()
    assert await migrate(url) == ["0011_agent_open_tickets.sql"]
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        kept, counted = await loads(conn, "ann", "bob")
        assert kept == counted == {"ann": 2, "bob": 1}
        await insert(conn, "open", "bob")  # and the trigger takes over from the count
        assert (await loads(conn, "bob"))[0] == {"bob": 2}


async def test_a_rerouted_ticket_does_not_weigh_on_the_agent_who_has_it(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    """Re-routing (a transfer, an escalation back into a queue the assignee is in) compares the other agents' loads
    with the assignee's load without this ticket, as the count it replaced did (`id <> ticket`)."""
    acts = TicketActivities(pool, config, smtp_settings)
    async with pool.connection() as conn:  # other tests share the database: level carmen with james, this one included
        tid = await insert(conn, "open", "carmen")
        kept, _ = await loads(conn, "carmen", "james")
        for _i in range(kept.get("carmen", 0) - kept.get("james", 0)):
            await insert(conn, "open", "james")
        for _i in range(kept.get("james", 0) - kept.get("carmen", 0)):
            await insert(conn, "open", "carmen")
        await conn.commit()
        kept, _ = await loads(conn, "carmen", "james")
    assert kept["carmen"] == kept["james"]
    now = datetime.now(UTC)
    routing = await acts.route(RouteRequest(ticket_id=tid, seq=5, department="billing", tier=1, step="route:5", at=now))
    assert routing.agent == "carmen" and f"least loaded ({kept['carmen'] - 1} open)" in routing.reason, routing
