"""Assignment strategies as a table (pure), and the route activity choosing for real on Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activities import TicketActivities
from activities.mail import SmtpSettings
from ticketflow.assignment import Candidate, Strategy, choose, on_shift
from ticketflow.calendar import BusinessCalendar
from ticketflow.config import Config
from ticketflow.ids import ticket_id_for
from ticketflow.models import RouteRequest

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
ANA = Candidate("ana", ("pt", "es", "en"), ("returns",))
TOM = Candidate("tom", ("de", "en"), ())
LIV = Candidate("liv", ("en",), ("billing",))
TEAM = [ANA, TOM, LIV]


@pytest.mark.parametrize(
    ("strategy", "cursor", "loads", "language", "category", "expected", "why"),
    [
        ("round_robin", 0, {}, None, None, "ana", "round-robin 1/3"),
        ("round_robin", 4, {"tom": 9}, None, None, "tom", "round-robin 2/3"),
        ("least_loaded", 0, {"ana": 3, "tom": 1, "liv": 2}, None, None, "tom", "least loaded (1 open)"),
        ("least_loaded", 1, {"ana": 1, "tom": 1, "liv": 2}, None, None, "tom", "least loaded (1 open)"),  # tie rotates
        ("skills", 0, {}, "pt", None, "ana", "skills (language)"),
        ("skills", 0, {"liv": 5, "ana": 0}, "en", "billing", "liv", "skills (language and skill)"),
        ("skills", 0, {"ana": 4, "tom": 1, "liv": 2}, "en", None, "tom", "skills (language), then least loaded"),
        ("skills", 0, {}, "ja", "hr", "ana", "skills (no match), then least loaded (0 open)"),
    ],
)
def test_strategies(
    strategy: Strategy,
    cursor: int,
    loads: dict[str, int],
    language: str | None,
    category: str | None,
    expected: str,
    why: str,
) -> None:
    pick, reason = choose(TEAM, strategy, cursor=cursor, loads=loads, language=language, category=category)
    assert pick.id == expected and why in reason


def test_away_and_off_shift_agents_are_skipped_while_someone_works() -> None:
    nights = BusinessCalendar.model_validate(
        {"timezone": "UTC", "weekly": {"mon": [{"start": "22:00", "end": "06:00"}]}}
    )
    monday_noon = datetime(2026, 11, 23, 12, tzinfo=UTC)
    team = [
        Candidate("a", ("en",), (), away=True),
        Candidate("b", ("en",), (), calendar=nights),
        Candidate("c", ("en",), ()),
    ]
    present, note = on_shift(team, monday_noon)
    assert [a.id for a in present] == ["c"] and "2 away or off shift" in note
    present, note = on_shift(team[:2], monday_noon)  # nobody working: the night shift gets it, not the absentee
    assert [a.id for a in present] == ["b"] and "nobody on shift" in note


async def test_route_activity_uses_the_departments_strategy(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    """Billing assigns the least loaded tier-1 agent; Technical Support the one who speaks the language."""
    acts = TicketActivities(pool, config, smtp_settings)
    now = datetime.now(UTC)

    async def new_ticket(n: int, language: str, category: str, assignee: str | None = None) -> str:
        tid = ticket_id_for(f"<assign-{n}-{now.timestamp()}@test>")
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO tickets (id, channel, subject, body, customer_name, customer_email, customer_type,"
                " status, language, category, assignee, created_at) VALUES"
                " (%s, 'email', 's', 'b', 'n', 'n@example.com', 'regular', 'open', %s, %s, %s, %s)",
                (tid, language, category, assignee, now - timedelta(minutes=n)),
            )
        return tid

    async with pool.connection() as conn:  # other tests share the database: measure, then make james busier
        rows = await (
            await conn.execute(
                "SELECT assignee, count(*) AS n FROM tickets WHERE status IN ('new', 'open', 'pending')"
                " AND assignee IN ('james', 'carmen') GROUP BY assignee"
            )
        ).fetchall()
    load = {r["assignee"]: r["n"] for r in rows}
    for i in range(load.get("carmen", 0) - load.get("james", 0) + 2):
        await new_ticket(100 + i, "en", "billing", "james")
    tid = await new_ticket(1, "en", "billing")
    routing = await acts.route(RouteRequest(ticket_id=tid, seq=2, department="billing", tier=1, step="route:2", at=now))
    assert routing.agent == "carmen" and "least loaded" in routing.reason
    again = await acts.route(RouteRequest(ticket_id=tid, seq=2, department="billing", tier=1, step="route:2", at=now))
    assert again == routing  # a retried step returns the decision already taken

    tid = await new_ticket(2, "fr", "outage")
    routing = await acts.route(
        RouteRequest(ticket_id=tid, seq=2, department="technical_support", tier=1, step="route:2", at=now)
    )
    assert routing.agent == "lucas" and "skills (language)" in routing.reason
