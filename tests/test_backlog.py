"""The backlog gauges, read from a real PostgreSQL at scrape time: open tickets, the oldest one,
tickets about to breach, and a database that cannot be read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from activities import clocks
from activities.backlog import BacklogCollector
from starter.devstack import free_port
from ticketflow.config import Config, default_config
from ticketflow.models import SlaEvent

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


def test_a_business_clock_falls_due_in_business_hours(config: Config) -> None:
    """20 business minutes left at 17:50 on a Monday in Berlin: due 08:10 on Tuesday, not 18:10."""
    dept = next(k for k, d in config.departments.items() if d.calendar == "eu_office")
    since = datetime(2026, 11, 30, 17, 50, tzinfo=ZoneInfo("Europe/Berlin"))
    assert config.clock_due(dept, since, 1200, business=True) == datetime(
        2026, 12, 1, 8, 10, tzinfo=ZoneInfo("Europe/Berlin")
    )
    assert config.clock_due(dept, since, 1200, business=False) == since + timedelta(minutes=20)
    assert config.clock_due("closed_down", since, 1200, business=True) == since + timedelta(minutes=20)


async def insert_ticket(conn: AsyncConnection[dict[str, Any]], dept: str, status: str, **cols: Any) -> str:
    tid = uuid.uuid4().hex[:12]
    row = {
        "id": tid,
        "channel": "email",
        "subject": "s",
        "body": "b",
        "customer_name": "n",
        "customer_email": "n@example.com",
        "customer_type": "regular",
        "status": status,
        "department": dept,
        "priority": "normal",
        "tier": 1,
        "created_at": datetime.now(UTC),
        **cols,
    }
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    await conn.execute(f"INSERT INTO tickets ({names}) VALUES ({marks})", tuple(row.values()))
    return tid


async def clock_event(conn: AsyncConnection[dict[str, Any]], tid: str, seq: int, event: str, **cols: Any) -> None:
    row = {
        "ticket_id": tid,
        "seq": seq,
        "metric": "first_response",
        "clock_started_at": cols.pop("clock_started_at"),
        "event": event,
        "elapsed_seconds": 0.0,
        "target_seconds": 1800,
        "business": False,
        "at": cols.pop("at"),
        "clock_applied": True,
        **cols,
    }
    names = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    await conn.execute(f"INSERT INTO sla_events ({names}) VALUES ({marks})", tuple(row.values()))
    sla = SlaEvent.model_validate(row)  # and on the clock's row, as the audit step does
    await clocks.apply(conn, clocks.clock_rows(tid, seq, row["at"], [sla], "", default_config()))


def scrape(collector: BacklogCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(collector)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_backlog_gauges_read_what_is_open_oldest_and_at_risk(pool: Pool, migrated: str, config: Config) -> None:
    dept = f"bk-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        soon = await insert_ticket(conn, dept, "open", created_at=now - timedelta(hours=3))
        await clock_event(
            conn, soon, 3, "started", clock_started_at=now - timedelta(minutes=10), at=now - timedelta(minutes=10)
        )
        later = await insert_ticket(conn, dept, "open", priority="low")
        await clock_event(
            conn, later, 3, "started", clock_started_at=now, at=now, target_seconds=5 * 3600
        )  # due in 5 hours
        paused = await insert_ticket(conn, dept, "pending")
        await clock_event(
            conn, paused, 3, "started", clock_started_at=now - timedelta(minutes=20), at=now - timedelta(minutes=20)
        )
        await clock_event(
            conn,
            paused,
            4,
            "paused",
            clock_started_at=now - timedelta(minutes=20),
            at=now - timedelta(minutes=5),
            elapsed_seconds=900,
        )
        breached = await insert_ticket(conn, dept, "open", tier=2, sla_breached=True)
        await clock_event(
            conn, breached, 3, "started", clock_started_at=now - timedelta(hours=1), at=now - timedelta(hours=1)
        )
        await clock_event(
            conn,
            breached,
            5,
            "breached",
            clock_started_at=now - timedelta(hours=1),
            at=now - timedelta(minutes=30),
            elapsed_seconds=1800,
        )
        await insert_ticket(conn, dept, "closed", created_at=now - timedelta(days=9))
        await insert_ticket(conn, dept, "resolved", created_at=now - timedelta(days=8))

    got = scrape(BacklogCollector(migrated, config))
    assert got["ticketflow_backlog_up"][()] == 1.0
    tickets = {k: v for k, v in got["ticketflow_backlog_tickets"].items() if ("department", dept) in k}
    by = {(dict(k)["status"], dict(k)["tier"], dict(k)["priority"]): v for k, v in tickets.items()}
    assert by == {
        ("open", "1", "normal"): 1,
        ("open", "1", "low"): 1,
        ("open", "2", "normal"): 1,
        ("pending", "1", "normal"): 1,
        ("resolved", "1", "normal"): 1,
    }  # the closed one is not backlog
    oldest = got["ticketflow_backlog_oldest_open_seconds"][(("department", dept),)]
    assert 3 * 3600 <= oldest < 3 * 3600 + 120  # the resolved ticket from 8 days ago is not open
    risk = {
        dict(k)["priority"]: v
        for k, v in got["ticketflow_backlog_at_risk_tickets"].items()
        if ("department", dept) in k
    }
    assert risk == {"normal": 1}  # only `soon`: `later` is 5 h away, `paused` waits, `breached` is past risk
    assert got["ticketflow_backlog_breached_tickets"][(("department", dept), ("priority", "normal"))] == 1
    some = next(iter(config.departments))
    assert got["ticketflow_backlog_at_risk_tickets"][(("department", some), ("priority", "urgent"))] >= 0  # zeros shown


async def test_backlog_is_cached_between_scrapes(pool: Pool, migrated: str, config: Config) -> None:
    dept = f"bk-{uuid.uuid4().hex[:6]}"
    collector = BacklogCollector(migrated, config, ttl_seconds=3600)

    def open_count() -> float:
        samples = scrape(collector)["ticketflow_backlog_tickets"]
        return sum(v for k, v in samples.items() if ("department", dept) in k)

    async with pool.connection() as conn:
        await insert_ticket(conn, dept, "open")
    assert open_count() == 1
    async with pool.connection() as conn:
        await insert_ticket(conn, dept, "open")
    assert open_count() == 1  # within the cache's lifetime: no new query
    collector._cached_at -= 3601  # the cache expires
    assert open_count() == 2


def test_an_unreadable_database_shows_as_down_instead_of_failing_the_scrape(config: Config) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/ticketflow?connect_timeout=2"
    got = scrape(BacklogCollector(url, config))
    assert got == {"ticketflow_backlog_up": {(): 0.0}}
