"""The current state of each SLA clock (`sla_clocks`, migration 0009), against a replay of its events.

The at-risk gauge used to replay every SLA event of every open ticket at each read. It now reads `sla_clocks`,
which the audit step keeps with the events and migration 0009 built from those before it. Replaying the events
is still the definition of a clock's state, so it is the oracle here: for random histories written through the
real audit activity, for the same histories carried over by the migration, and for a real ticket's clocks on
the time-skipping server, whose own deadlines the rows must match.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import clocks
from activities.db import migrate
from activities.mail import SmtpSettings
from activities.tickets import TicketActivities
from starter.client import TicketClient
from starter.devstack import free_port
from tests.conftest import SURVEY_LINKS, WorkerFactory
from tests.test_backlog import insert_ticket
from tests.test_e2e import poll
from tests.test_sla import (  # noqa: F401 (ts_env: the fixture)
    BERLIN,
    EXPORT_ERROR,
    NEW_YORK,
    near,
    next_weekday_at,
    open_at,
    skip_to,
    ts_env,
)
from ticketflow.config import Config
from ticketflow.models import AuditEntry, Priority, SlaEvent
from worker import keep_clocks_reconciled, reconcile_clocks

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
METRICS = ("first_response", "next_reply", "resolution")
LATER = ("paused", "resumed", "reminder", "retargeted", "breached", "fulfilled")


@dataclass
class Clock:
    department: str
    running: bool = False
    done: bool = False
    elapsed: float = 0.0
    target: int = 0
    business: bool = False
    since: datetime | None = None
    started: datetime | None = None


def replay(events: list[dict[str, Any]]) -> dict[tuple[str, str], Clock]:
    """Each clock's state from its events, in the order the audit log wrote them: what the gauge computed
    before migration 0009 (a later run of a clock, a next reply, replaces the earlier one)."""
    out: dict[tuple[str, str], Clock] = {}
    for e in sorted(events, key=lambda e: (e["ticket_id"], e["metric"], e["clock_started_at"], e["seq"])):
        if e["metric"] == "tier":
            continue
        key = (e["ticket_id"], e["metric"])
        c = out.get(key)
        if c is None or c.started != e["clock_started_at"]:
            c = out[key] = Clock(e["department"], started=e["clock_started_at"])
        c.elapsed, c.target, c.business = e["elapsed_seconds"], e["target_seconds"], e["business"]
        if e["event"] in ("started", "resumed"):
            c.running, c.since = True, e["at"]
        elif e["event"] == "paused":
            c.running = False
        elif e["event"] in ("fulfilled", "breached"):
            c.done = True
        elif e["event"] in ("retargeted", "reminder") and c.running:
            c.since = e["at"]
    return out


@dataclass
class Entry:
    ticket_id: str
    department: str
    seq: int
    at: datetime
    events: list[SlaEvent] = field(default_factory=list)

    def audit(self) -> AuditEntry:
        return AuditEntry(
            ticket_id=self.ticket_id, seq=self.seq, event="clock_test", actor="system", at=self.at, detail={},
            sla_events=self.events,
        )  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                **e.model_dump(),
                "ticket_id": self.ticket_id,
                "seq": self.seq,
                "at": self.at,
                "department": self.department,
            }
            for e in self.events
        ]


def history(rng: random.Random, ticket_id: str, department: str) -> list[Entry]:
    """A ticket's SLA events, any of them in any order after a clock's start (the replay defines what each does),
    with next runs of a clock, tier budgets (not SLAs) and now and then an event of a clock's earlier run."""
    runs: dict[str, list[datetime]] = {}
    elapsed: dict[str, float] = {}
    target: dict[str, int] = {}
    business: dict[str, bool] = {}
    entries, at = [], T0
    for seq in range(4, 4 + rng.randint(1, 14)):
        at += timedelta(seconds=rng.randint(1, 9000), microseconds=rng.randint(0, 999_999))
        entry = Entry(ticket_id, department, seq, at)
        for metric in rng.sample(METRICS, rng.randint(1, 2)):
            started = runs.get(metric, [])
            if not started or rng.random() < 0.15:
                runs.setdefault(metric, []).append(at)
                elapsed[metric], kind = 0.0, "started"
                target[metric], business[metric] = rng.choice([1800, 4 * 3600, 8 * 3600]), rng.random() < 0.6
            else:
                kind = rng.choice(LATER)
                elapsed[metric] += rng.uniform(0, 3600)
                if kind == "retargeted":
                    target[metric] = rng.choice([1800, 4 * 3600, 8 * 3600])
            run = started[-2] if len(started) > 1 and kind != "started" and rng.random() < 0.1 else runs[metric][-1]
            entry.events.append(
                SlaEvent(
                    metric=metric,
                    clock_started_at=run,
                    event=kind,
                    elapsed_seconds=round(elapsed[metric], 3),
                    target_seconds=target[metric],
                    business=business[metric],
                )
            )
        if rng.random() < 0.2:
            entry.events.append(
                SlaEvent(metric="tier", clock_started_at=T0, event="started", elapsed_seconds=0, target_seconds=60,
                         business=False)
            )  # fmt: skip
        entries.append(entry)
    return entries


async def histories(conn: AsyncConnection[Any], config: Config, n: int, seed: int) -> list[Entry]:
    """n tickets, in every department of the policy and one it no longer has, each with a random history."""
    rng = random.Random(seed)
    departments = [*config.departments, "closed_down"]
    out: list[Entry] = []
    for _ in range(n):
        dept = rng.choice(departments)
        tid = await insert_ticket(conn, dept, "open")
        out += history(rng, tid, dept)
    return out


async def insert_events(conn: AsyncConnection[Any], entries: list[Entry]) -> None:
    """The entries' SLA events alone, as a release before 0009 wrote them."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO sla_events (ticket_id, seq, metric, clock_started_at, event, elapsed_seconds, target_seconds,"
            " business, fraction, department, at) VALUES (%(ticket_id)s, %(seq)s, %(metric)s, %(clock_started_at)s,"
            " %(event)s, %(elapsed_seconds)s, %(target_seconds)s, %(business)s, %(fraction)s, %(department)s, %(at)s)",
            [r for e in entries for r in e.rows()],
        )


async def stored(conn: AsyncConnection[Any], ticket_ids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    cur = await conn.execute("SELECT * FROM sla_clocks WHERE ticket_id = ANY(%s)", (ticket_ids,))
    return {(r["ticket_id"], r["metric"]): r for r in await cur.fetchall()}


def assert_equal_to_replay(
    rows: dict[tuple[str, str], dict[str, Any]], entries: list[Entry], config: Config
) -> dict[str, int]:
    """Every clock's row against the replay of its events, and the due instant against the policy's calendar."""
    expected = replay([r for e in entries for r in e.rows()])
    assert rows.keys() == expected.keys()
    seen = {"running": 0, "paused": 0, "done": 0, "business_due": 0}
    for key, c in expected.items():
        row = rows[key]
        assert row["clock_started_at"] == c.started, key
        assert (row["running"], row["done"]) == (c.running, c.done), key
        assert (row["elapsed_seconds"], row["target_seconds"], row["business"]) == (c.elapsed, c.target, c.business)
        if c.running:
            assert row["since"] == c.since, key
        if c.running and not c.done:
            assert c.since is not None
            due = config.clock_due(c.department, c.since, c.target - c.elapsed, c.business)
            assert row["due_at"] is not None and abs((row["due_at"] - due).total_seconds()) < 1e-3, (key, row, due)
            seen["running"] += 1
            seen["business_due"] += c.business and c.department in config.departments
        seen["paused"] += not c.running and not c.done
        seen["done"] += c.done
    return seen


async def test_the_audit_step_keeps_each_clock_equal_to_a_replay_of_its_events(
    pool: Pool, config: Config, smtp_settings: SmtpSettings
) -> None:
    acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    env = ActivityEnvironment()
    async with pool.connection() as conn:
        entries = await histories(conn, config, 120, seed=9)
    for entry in entries:
        await env.run(acts.record_event, entry.audit())
    rng = random.Random(3)
    async with pool.connection() as conn:
        for entry in rng.sample(entries, 40):  # retried or replayed steps: the audit log has them already
            await env.run(acts.record_event, entry.audit())
        async with conn.transaction():  # and the rows alone, applied again out of order, change nothing
            for entry in rng.sample(entries, 40):
                await clocks.apply(
                    conn,
                    clocks.clock_rows(entry.ticket_id, entry.seq, entry.at, entry.events, entry.department, config),
                )
        found = await stored(conn, sorted({e.ticket_id for e in entries}))
    seen = assert_equal_to_replay(found, entries, config)
    assert all(seen.values()), seen  # the histories reached every kind of state


async def new_database(postgres_url: str, upto: int | None = None) -> str:
    name = f"clocks_{uuid.uuid4().hex[:8]}"
    async with await AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    assert await migrate(url, upto=upto)
    return url


async def test_migration_0009_carries_over_the_clocks_of_an_earlier_schema(postgres_url: str, config: Config) -> None:
    url = await new_database(postgres_url, upto=8)
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        entries = await histories(conn, config, 150, seed=11)
        await insert_events(conn, entries)
        await conn.commit()
    assert await migrate(url, upto=9) == ["0009_sla_clocks.sql"]
    filled = await clocks.fill_dues(url, config)  # what the worker does when it starts
    assert filled > 0
    assert await clocks.fill_dues(url, config) == 0  # once
    ids = sorted({e.ticket_id for e in entries})
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        seen = assert_equal_to_replay(await stored(conn, ids), entries, config)
    assert all(seen.values()), seen


async def test_migration_0010_has_the_clocks_rebuilt_with_what_old_workers_wrote_while_0009_ran(
    postgres_url: str, config: Config
) -> None:
    """0009 builds the rows from a snapshot of the events; an old worker goes on writing meanwhile, and nothing
    tells its events apart. 0010 counts the events of open tickets unapplied, so the first reconcile rebuilds them."""
    url = await new_database(postgres_url, upto=8)
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        entries = await histories(conn, config, 100, seed=12)
        first = {e.ticket_id: e.seq for e in reversed(entries)}  # each ticket's first entry comes before 0009
        await insert_events(conn, [e for e in entries if e.seq == first[e.ticket_id]])
        await conn.commit()
    assert await migrate(url, upto=9) == ["0009_sla_clocks.sql"]
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        await insert_events(conn, [e for e in entries if e.seq != first[e.ticket_id]])  # while 0009 ran
        closed = entries[0].ticket_id
        await conn.execute("UPDATE tickets SET status = 'closed' WHERE id = %s", (closed,))
        await conn.commit()
    assert await migrate(url, upto=10) == ["0010_sla_clock_rebuild.sql"]
    await clocks.fill_dues(url, config)
    clocks_of_open = {(e.ticket_id, v.metric) for e in entries for v in e.events if v.metric != "tier"}
    assert await clocks.reconcile(url, config) == len({k for k in clocks_of_open if k[0] != closed})
    assert await clocks.reconcile(url, config) == 0
    async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
        rows = await stored(conn, sorted({e.ticket_id for e in entries}))
    open_entries = [e for e in entries if e.ticket_id != closed]
    seen = assert_equal_to_replay({k: r for k, r in rows.items() if k[0] != closed}, open_entries, config)
    assert all(seen.values()), seen


async def _old_release_apply(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> None:
    """The audit step of a release before 0009: the events, and no clock row."""


async def test_a_rolling_upgrade_past_0009_is_caught_up_by_reconcile(
    postgres_url: str, config: Config, smtp_settings: SmtpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old and new workers side by side, a ticket's entries going to either: a row can miss an event in the middle
    of its history. A reconcile then makes every clock what its events say, and leaves a clock that an audit step
    moved on meanwhile to the next round."""
    url = await new_database(postgres_url)
    pool: Pool = AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}, open=False)
    await pool.open()
    try:
        acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
        async with pool.connection() as conn:
            entries = await histories(conn, config, 100, seed=21)
        rng, new_release = random.Random(5), clocks.apply
        old_pairs = set()  # the clocks an old worker wrote an event of
        for entry in entries:
            old = rng.random() < 0.5
            old_pairs |= {(entry.ticket_id, e.metric) for e in entry.events if old and e.metric != "tier"}
            monkeypatch.setattr(clocks, "apply", _old_release_apply if old else new_release)
            await ActivityEnvironment().run(acts.record_event, entry.audit())
            if old:  # its INSERT has no clock_applied: the column's default
                async with pool.connection() as conn:
                    await conn.execute(
                        "UPDATE sla_events SET clock_applied = DEFAULT WHERE ticket_id = %s AND seq = %s",
                        (entry.ticket_id, entry.seq),
                    )
        monkeypatch.setattr(clocks, "apply", new_release)
        ids = sorted({e.ticket_id for e in entries})
        async with pool.connection() as conn:
            before = await stored(conn, ids)
        expected = replay([r for e in entries for r in e.rows()])

        def state(row: dict[str, Any] | None) -> tuple[Any, ...] | None:
            return (
                None if row is None else (row["clock_started_at"], row["running"], row["done"], row["elapsed_seconds"])
            )

        wrong = {k for k, c in expected.items() if state(before.get(k)) != (c.started, c.running, c.done, c.elapsed)}
        assert len(wrong) > 30  # rows behind, missing, or missing an event in the middle
        last = {k: max(e.seq for e in entries if e.ticket_id == k[0] and k[1] in {v.metric for v in e.events})
                for k in expected}  # fmt: skip
        # among them rows at their clock's last entry that missed an earlier one: the rows' seq cannot tell
        assert any(k in before and before[k]["seq"] == last[k] for k in wrong)

        assert wrong <= old_pairs
        assert await clocks.reconcile(url, config) == len(old_pairs)
        async with pool.connection() as conn:
            seen = assert_equal_to_replay(await stored(conn, ids), entries, config)
        assert all(seen.values()), seen
        assert await clocks.reconcile(url, config) == 0  # caught up: nothing to read until an old worker writes

        # A clock an audit step moved on (a later entry) while the rebuild read the events: its row stays, and
        # its event stays unapplied for the next round.
        key = min(expected)
        async with pool.connection() as conn:
            await conn.execute("UPDATE sla_events SET clock_applied = false WHERE ticket_id = %s AND metric = %s", key)
            await conn.execute("UPDATE sla_clocks SET seq = seq + 100 WHERE ticket_id = %s AND metric = %s", key)
            await conn.commit()
            moved = (await stored(conn, [key[0]]))[key]
            assert await clocks.reconcile(url, config) == 0
            assert (await stored(conn, [key[0]]))[key] == moved
            await conn.execute("UPDATE sla_clocks SET seq = seq - 100, running = NOT running WHERE ticket_id = %s"
                               " AND metric = %s", key)  # fmt: skip
            await conn.commit()
            assert await clocks.reconcile(url, config) == 1  # the next round, the entry in its events
            assert_equal_to_replay(await stored(conn, ids), entries, config)
    finally:
        await pool.close()


async def test_the_worker_reconciles_clocks_while_it_runs(migrated: str, pool: Pool, config: Config) -> None:
    """worker.keep_clocks_reconciled: a row an old worker left behind is caught up within a period."""
    async with pool.connection() as conn:
        entries = await histories(conn, config, 3, seed=8)
        ids = sorted({e.ticket_id for e in entries})
        await insert_events(conn, entries)  # an old worker: the events only
    task = asyncio.create_task(keep_clocks_reconciled(migrated, config, every=0.1))

    async def rows() -> dict[tuple[str, str], dict[str, Any]]:
        async with pool.connection() as conn:
            return await stored(conn, ids)

    try:
        expected = replay([r for e in entries for r in e.rows()])
        found = await poll(rows, lambda found: found.keys() == expected.keys())
        assert_equal_to_replay(found, entries, config)
    finally:
        task.cancel()


async def test_a_database_away_skips_a_round_of_reconciling_and_keeps_the_worker(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    await reconcile_clocks(f"postgresql://postgres@127.0.0.1:{port}/ticketflow?connect_timeout=2", config)
    assert "SLA clocks not reconciled this time" in caplog.text


async def test_a_tickets_clock_rows_fall_due_when_its_workflow_says(
    ts_env: WorkflowEnvironment,  # noqa: F811
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    config: Config,
) -> None:
    """Business hours, a pause, a next reply, a transfer to another continent and a priority change: after each,
    the rows say what the workflow's own clocks say (its timers fire on those instants)."""
    eu = config.calendars["eu_office"]
    monday = await next_weekday_at(ts_env, eu, 0, time(17, 0), BERLIN)
    tickets = TicketClient(ts_client, task_queue)

    async def check(tid: str) -> dict[str, dict[str, Any]]:
        state = await tickets.get(tid)
        cal = config.calendar_of(state.department or "")
        async with pool.connection() as conn:
            rows = {m: r for (_, m), r in (await stored(conn, [tid])).items()}
        assert set(state.sla) <= set(rows)
        for metric, row in rows.items():
            clock = state.sla.get(metric)
            due = clock.due_at(cal) if clock is not None and not clock.breached else None
            if due is None:
                assert not (row["running"] and not row["done"]), (metric, row)
            else:
                assert row["running"] and not row["done"], (metric, row)
                # an event's instant is its audit entry's, which the workflow takes a moment after it measured
                assert near(row["due_at"], due), (metric, row["due_at"], due)
        return rows

    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        rows = await check(tid)
        # 17:00 Berlin, four business hours to the first response: one today, three from 08:00 Tuesday
        assert near(rows["first_response"]["due_at"], (monday + timedelta(days=1)).replace(hour=11))
        await skip_to(ts_env, monday.replace(hour=17, minute=30))
        state = await tickets.reply(tid, "anna", "Which browser do you use?", pend=True)
        rows = await check(tid)
        assert not rows["resolution"]["running"] and rows["first_response"]["done"]
        await skip_to(ts_env, (monday + timedelta(days=1)).replace(hour=9))
        await tickets.customer_reply(tid, "Firefox 140.")
        rows = await check(tid)
        assert rows["resolution"]["running"] and rows["next_reply"]["running"]
        await skip_to(ts_env, (monday + timedelta(days=1)).replace(hour=15))
        state = await tickets.transfer(tid, "anna", "billing", "this is about an invoice export")
        assert state.department == "billing"
        rows = await check(tid)
        assert rows["next_reply"]["due_at"].astimezone(NEW_YORK).date() == (monday + timedelta(days=1)).date()
        await skip_to(ts_env, (monday + timedelta(days=1)).replace(hour=15, minute=10))
        await tickets.change_priority(tid, "anna", Priority.LOW, "a workaround is in place")  # nothing breaches
        await check(tid)
