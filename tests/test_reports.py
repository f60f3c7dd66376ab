"""The department report (SQL function department_report() and `ticketflow report`) on hand-made rows with
known answers: counts per period, empty periods present, week and month buckets, time-zone bucketing,
averages, CSAT and SLA percentages, and the CLI's table, CSV and usage errors.

Other tests share the database, so every figure is read for this module's own departments only."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
import typer
from psycopg import AsyncConnection
from psycopg.errors import InvalidParameterValue
from psycopg_pool import AsyncConnectionPool
from typer.testing import CliRunner

from starter.reports import ReportRow, department_report, human_duration, report

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
BERLIN = ZoneInfo("Europe/Berlin")
TAG = uuid.uuid4().hex[:8]
BILLING, SUPPORT, EMPTY = f"rpt_billing_{TAG}", f"rpt_support_{TAG}", f"rpt_empty_{TAG}"
MINE = [BILLING, SUPPORT]


def utc(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2021, month, day, hour, minute, tzinfo=UTC)


WEEK_START, WEEK_END = utc(1, 0), utc(8, 0)  # Monday 1 March 2021 up to Monday 8 March


@dataclass
class Scenario:
    """Rows as the activities write them: each audit entry's seq is shared by its message and SLA events."""

    tickets: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    sla: list[tuple[Any, ...]] = field(default_factory=list)
    ratings: list[tuple[Any, ...]] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)
    departments: dict[str, str] = field(default_factory=dict)

    def ticket(self, name: str, department: str, created: datetime, first_response: datetime | None) -> str:
        tid = f"rpt-{name}-{TAG}"
        self.departments[tid] = department
        customer = ("Ada", "ada@example.com", "regular")
        row = (tid, "email", "Invoice question", "Where is my invoice?", *customer, department, "normal", created)
        self.tickets.append((*row, first_response))
        self.record(tid, "created", created, message="customer")
        return tid

    def record(
        self, tid: str, event: str, at: datetime, *, message: str | None = None, sla: Sequence[tuple[Any, ...]] = ()
    ) -> None:
        """sla items: (metric, clock_started_at, clock event, elapsed business seconds)."""
        seq = self.seqs[tid] = self.seqs.get(tid, 0) + 1
        self.audit.append((tid, seq, event, message or "system", at))
        if message is not None:
            self.messages.append((tid, seq, message, message, f"{event} body", at))
        for metric, started, clock_event, elapsed in sla:
            self.sla.append(
                (tid, seq, metric, started, clock_event, elapsed, 14400, True, self.departments[tid], "normal", at)
            )

    def rate(self, tid: str, resolution: int, score: int, at: datetime) -> None:
        self.ratings.append((tid, resolution, score, str(score), 1, self.departments[tid], at))
        self.record(tid, "rated", at)


def scenario() -> Scenario:
    """Billing (4 busy days, then 3 empty ones) and support (2 days) in the week of 1 March 2021."""
    s = Scenario()
    # T1: created Mon 09:00, first answer after 2 h (1 h business), two more replies, resolved Tue, rated 5.
    t1 = s.ticket("t1", BILLING, utc(1, 9), first_response=utc(1, 11))
    s.record(
        t1,
        "opened",
        utc(1, 9),
        sla=[("first_response", utc(1, 9), "started", 0), ("resolution", utc(1, 9), "started", 0)],
    )
    s.record(t1, "agent_reply", utc(1, 11), message="agent", sla=[("first_response", utc(1, 9), "fulfilled", 3600)])
    s.record(t1, "agent_reply", utc(2, 10), message="agent")
    s.record(t1, "agent_reply", utc(2, 10, 30), message="agent")
    s.record(t1, "tier_budget_exhausted", utc(2, 11), sla=[("tier", utc(1, 9), "breached", 7200)])  # no SLA
    s.record(t1, "resolved", utc(2, 12), sla=[("resolution", utc(1, 9), "fulfilled", 20000)])
    s.rate(t1, 1, 5, utc(2, 13))
    # T2: created Mon 23:30 UTC (Tuesday in Berlin); first response breached, then given an hour after creation.
    t2 = s.ticket("t2", BILLING, utc(1, 23, 30), first_response=utc(2, 0, 30))
    s.record(
        t2,
        "opened",
        utc(1, 23, 30),
        sla=[("first_response", utc(1, 23, 30), "started", 0), ("resolution", utc(1, 23, 30), "started", 0)],
    )
    s.record(t2, "sla_breach", utc(2, 0, 10), sla=[("first_response", utc(1, 23, 30), "breached", 1800)])
    s.record(
        t2, "agent_reply", utc(2, 0, 30), message="agent", sla=[("first_response", utc(1, 23, 30), "fulfilled", 2400)]
    )
    s.record(t2, "internal_note", utc(3, 7), message="note")  # an internal note is no answer
    s.record(t2, "agent_reply", utc(3, 8, 30), message="agent")
    s.record(t2, "resolved", utc(3, 9), sla=[("resolution", utc(1, 23, 30), "fulfilled", 30000)])
    s.rate(t2, 1, 1, utc(3, 9, 30))
    s.record(t2, "customer_reply", utc(3, 10), message="customer", sla=[("next_reply", utc(3, 10), "started", 0)])
    s.record(t2, "reopened", utc(3, 10), sla=[("resolution", utc(3, 10), "started", 0)])
    s.record(t2, "sla_breach", utc(4, 8), sla=[("resolution", utc(3, 10), "breached", 10000)])
    s.record(t2, "agent_reply", utc(4, 9), message="agent", sla=[("next_reply", utc(3, 10), "fulfilled", 5000)])
    s.record(t2, "resolved", utc(4, 10), sla=[("resolution", utc(3, 10), "fulfilled", 12000)])
    s.rate(t2, 2, 3, utc(4, 11))
    # T3: created Wed, never answered; its first-response clock ends breached, never met.
    t3 = s.ticket("t3", BILLING, utc(3, 8), first_response=None)
    s.record(t3, "opened", utc(3, 8), sla=[("first_response", utc(3, 8), "started", 0)])
    s.record(t3, "sla_breach", utc(3, 12), sla=[("first_response", utc(3, 8), "breached", 14400)])
    # Support: T4 answered in 20 minutes and rated good (stored as 5); T5 on Saturday, rated 2.
    t4 = s.ticket("t4", SUPPORT, utc(2, 12), first_response=utc(2, 12, 20))
    s.record(
        t4, "agent_reply", utc(2, 12, 20), message="agent", sla=[("first_response", utc(2, 12), "fulfilled", 1200)]
    )
    s.record(t4, "resolved", utc(2, 13), sla=[("resolution", utc(2, 12), "fulfilled", 3600)])
    s.rate(t4, 1, 5, utc(2, 14))
    t5 = s.ticket("t5", SUPPORT, utc(6, 10), first_response=utc(6, 12))
    s.record(t5, "agent_reply", utc(6, 12), message="agent", sla=[("first_response", utc(6, 10), "fulfilled", 7200)])
    s.record(t5, "resolved", utc(6, 14))
    s.rate(t5, 1, 2, utc(6, 15))
    return s


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(pool: Pool) -> None:
    s = scenario()
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO tickets (id, channel, subject, body, customer_name, customer_email, customer_type,"
            " department, priority, created_at, first_response_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            s.tickets,
        )
        await cur.executemany(
            "INSERT INTO audit_log (ticket_id, seq, event, actor, at) VALUES (%s, %s, %s, %s, %s)", s.audit
        )
        await cur.executemany(
            "INSERT INTO messages (ticket_id, seq, author_kind, author, body, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            s.messages,
        )
        await cur.executemany(
            "INSERT INTO sla_events (ticket_id, seq, metric, clock_started_at, event, elapsed_seconds,"
            " target_seconds, business, department, priority, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            s.sla,
        )
        await cur.executemany(
            "INSERT INTO csat_ratings (ticket_id, resolution, score, raw, tier, department, rated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            s.ratings,
        )


def by_period(rows: list[ReportRow], department: str) -> dict[datetime, ReportRow]:
    return {r.period_start: r for r in rows if r.department == department}


def counts(row: ReportRow) -> tuple[int, ...]:
    r = row
    return (r.created, r.resolved, r.reopened, r.answered, r.agent_replies, r.ratings, r.sla_clocks, r.sla_met)


ZERO = (0, 0, 0, 0, 0, 0, 0, 0)


async def test_daily_counts_with_every_day_present(pool: Pool, seeded: None) -> None:
    rows = await department_report(pool, [*MINE, EMPTY], "day", WEEK_START, WEEK_END, "UTC")
    assert [r.department for r in rows] == [d for d in sorted([*MINE, EMPTY]) for _ in range(7)]
    billing = by_period(rows, BILLING)
    assert list(billing) == [utc(d, 0) for d in range(1, 8)]
    #                                     created resolved reopened answered replies ratings clocks met
    assert counts(billing[utc(1, 0)]) == (2, 0, 0, 1, 1, 0, 1, 1)
    assert counts(billing[utc(2, 0)]) == (0, 1, 0, 2, 3, 1, 2, 1)
    assert counts(billing[utc(3, 0)]) == (1, 1, 1, 1, 1, 1, 2, 1)
    assert counts(billing[utc(4, 0)]) == (0, 1, 0, 1, 1, 1, 2, 1)
    for day in (5, 6, 7):  # nothing happened: the days are there, with zeros and no averages
        empty = billing[utc(day, 0)]
        assert counts(empty) == ZERO
        assert empty.avg_first_response_seconds is None and empty.avg_resolution_business_seconds is None
        assert empty.positive_pct is None and empty.negative_pct is None and empty.sla_compliance_pct is None
    # a requested department without a single ticket still gets its seven rows
    assert [counts(r) for r in rows if r.department == EMPTY] == [ZERO] * 7


async def test_daily_averages_and_percentages(pool: Pool, seeded: None) -> None:
    billing = by_period(await department_report(pool, [BILLING], "day", WEEK_START, WEEK_END, "UTC"), BILLING)
    mon, tue, wed, thu = (billing[utc(d, 0)] for d in (1, 2, 3, 4))
    assert mon.avg_first_response_seconds == 7200  # calendar time: created 09:00, answered 11:00
    assert mon.avg_first_response_business_seconds == 3600
    assert (mon.sla_compliance_pct, mon.positive_pct) == (Decimal("100.00"), None)

    assert tue.avg_first_response_seconds == 3600  # T2, answered an hour after creation
    assert tue.avg_first_response_business_seconds == 2400  # breached, then fulfilled: still a response time
    assert tue.avg_resolution_business_seconds == 20000
    assert tue.avg_next_response_business_seconds is None
    assert (tue.positive_pct, tue.negative_pct) == (Decimal("100.00"), Decimal("0.00"))
    assert tue.sla_compliance_pct == Decimal("50.00")  # T1 resolution met, T2 first response breached

    assert wed.avg_first_response_seconds is None  # T3 was never answered
    assert wed.avg_first_response_business_seconds is None  # T3's clock ended breached, unfulfilled
    assert wed.avg_resolution_business_seconds == 30000
    assert (wed.positive_pct, wed.negative_pct) == (Decimal("0.00"), Decimal("100.00"))
    assert wed.sla_compliance_pct == Decimal("50.00")

    assert thu.avg_next_response_business_seconds == 5000
    assert thu.avg_resolution_business_seconds == 12000  # the reopened clock: breached, then fulfilled
    assert (thu.positive_pct, thu.negative_pct) == (Decimal("0.00"), Decimal("0.00"))  # a 3 is neither
    assert thu.sla_compliance_pct == Decimal("50.00")

    support = by_period(await department_report(pool, [SUPPORT], "day", WEEK_START, WEEK_END, "UTC"), SUPPORT)
    assert counts(support[utc(2, 0)]) == (1, 1, 0, 1, 1, 1, 2, 2)
    assert support[utc(2, 0)].avg_first_response_seconds == 1200
    assert counts(support[utc(6, 0)]) == (1, 1, 0, 1, 1, 1, 1, 1)
    assert (support[utc(6, 0)].positive_pct, support[utc(6, 0)].negative_pct) == (Decimal("0.00"), Decimal("100.00"))


async def test_sla_figures_agree_with_sla_daily(pool: Pool, seeded: None) -> None:
    rows = await department_report(pool, [BILLING], "day", WEEK_START, WEEK_END, "UTC")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT day, sum(clocks) AS clocks, sum(met) AS met FROM sla_daily WHERE department = %s GROUP BY day",
            (BILLING,),
        )
        daily = {r["day"]: (r["clocks"], r["met"]) for r in await cur.fetchall()}
    assert daily == {r.period_start.date(): (r.sla_clocks, r.sla_met) for r in rows if r.sla_clocks}


async def test_week_and_month_buckets(pool: Pool, seeded: None) -> None:
    weeks = await department_report(pool, MINE, "week", WEEK_START, utc(15, 0), "UTC")
    billing = by_period(weeks, BILLING)
    assert list(billing) == [utc(1, 0), utc(8, 0)]
    week = billing[utc(1, 0)]
    assert counts(week) == (3, 3, 1, 2, 6, 3, 7, 4)  # answered counts tickets, replies count messages
    assert week.avg_first_response_seconds == 5400
    assert week.avg_first_response_business_seconds == 3000
    assert week.avg_next_response_business_seconds == 5000
    assert week.avg_resolution_business_seconds == pytest.approx(62000 / 3)
    assert (week.positive_pct, week.negative_pct) == (Decimal("33.33"), Decimal("33.33"))
    assert week.sla_compliance_pct == Decimal("57.14")
    assert counts(billing[utc(8, 0)]) == ZERO
    assert counts(by_period(weeks, SUPPORT)[utc(1, 0)]) == (2, 2, 0, 2, 2, 2, 3, 3)

    # a range starting mid-month still shows that whole month's row; counts are limited to the range
    months = by_period(
        await department_report(pool, [BILLING], "month", utc(15, 0, month=2), utc(31, 0), "UTC"), BILLING
    )
    assert list(months) == [utc(1, 0, month=2), utc(1, 0)]
    assert counts(months[utc(1, 0, month=2)]) == ZERO
    assert counts(months[utc(1, 0)]) == counts(week)
    assert months[utc(1, 0)].sla_compliance_pct == Decimal("57.14")


async def test_days_in_the_requested_time_zone(pool: Pool, seeded: None) -> None:
    start = datetime(2021, 3, 1, tzinfo=BERLIN)
    rows = await department_report(pool, [BILLING], "day", start, start + timedelta(days=7), "Europe/Berlin")
    billing = by_period(rows, BILLING)
    assert list(billing) == [datetime(2021, 3, d, tzinfo=BERLIN) for d in range(1, 8)]
    # T2 was created at 23:30 UTC on Monday: 00:30 on Tuesday in Berlin
    assert billing[datetime(2021, 3, 1, tzinfo=BERLIN)].created == 1
    assert billing[datetime(2021, 3, 2, tzinfo=BERLIN)].created == 1
    assert billing[datetime(2021, 3, 2, tzinfo=BERLIN)].period_start == utc(1, 23)

    # periods follow the zone's calendar across a DST change (Berlin moved to CEST on 28 March 2021)
    dst = await department_report(pool, [EMPTY], "day", utc(26, 23), utc(29, 22), "Europe/Berlin")
    assert [r.period_start for r in dst] == [utc(26, 23), utc(27, 23), utc(28, 22)]


async def test_no_departments_means_all(pool: Pool, seeded: None) -> None:
    mine = await department_report(pool, MINE, "day", WEEK_START, WEEK_END, "UTC")
    everyone: list[str] | None
    for everyone in (None, []):
        rows = await department_report(pool, everyone, "day", WEEK_START, WEEK_END, "UTC")
        assert [r for r in rows if r.department in MINE] == mine
        assert EMPTY not in {r.department for r in rows}  # only departments that have tickets
        assert len(rows) % 7 == 0 and len(rows) >= 14


async def test_bad_arguments_are_refused_by_sql(pool: Pool, seeded: None) -> None:
    async with pool.connection() as conn:
        with pytest.raises(InvalidParameterValue, match="bucket must be day, week or month, not 'year'"):
            await conn.execute(
                "SELECT * FROM department_report(%s::text[], %s, %s, %s)", ([BILLING], "year", WEEK_START, WEEK_END)
            )
    with pytest.raises(ValueError, match="by must be one of day, week, month"):
        await department_report(pool, MINE, "quarter", WEEK_START, WEEK_END, "UTC")


def test_human_durations() -> None:
    assert [human_duration(s) for s in (None, 45, 725, 7500, 7529.6, 20000, 3 * 86400 + 4 * 3600)] == [
        "-", "45s", "12m 05s", "2h 05m", "2h 05m", "5h 33m", "3d 04h"
    ]  # fmt: skip


# --- the command ---------------------------------------------------------------------------------------

runner = CliRunner()


def cli() -> typer.Typer:
    """`ticketflow` with the report registered as cli.py does."""
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """ticketflow"""

    app.command("report")(report)
    return app


@pytest.fixture
def cli_env(migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DATABASE_URL at the test database and a policy that knows this module's departments."""
    text = resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8")
    for name, zone in ((BILLING, "Europe/Berlin"), (SUPPORT, "America/New_York")):
        text += (
            f'\n[departments.{name}]\nname = "{name}"\nemail = "{name}@example.com"\nlead = "lead@example.com"\n'
            f'timezone = "{zone}"\nagents = [{{ id = "a_{name}", name = "A", email = "a@example.com", tiers = [1] }}]\n'
        )
    (tmp_path / "policy.toml").write_text(text, "utf-8")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("TICKETFLOW_CONFIG_FILE", str(tmp_path / "policy.toml"))
    monkeypatch.setenv("DATABASE_URL", migrated)
    yield


def cells(output: str, *needles: str) -> list[str]:
    """The cells of the one table line holding every needle."""
    lines = [line for line in output.splitlines() if "│" in line and all(n in line for n in needles)]
    assert len(lines) == 1, output
    return [c.strip() for c in re.split(r"[│┃|]", lines[0])[1:-1]]


def test_cli_table(seeded: None, cli_env: None) -> None:
    args = ["report", "-d", BILLING, "-d", SUPPORT, "--from", "2021-03-01", "--to", "2021-03-07", "--tz", "UTC"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.output
    assert cells(result.stdout, BILLING, "2021-03-02") == [
        BILLING, "2021-03-02", "0", "1", "0", "2", "3", "1h 00m", "40m 00s", "-", "5h 33m", "1", "100.00%", "0.00%",
        "2", "1", "50.00%",
    ]  # fmt: skip
    assert cells(result.stdout, BILLING, "2021-03-07")[2:] == ["0"] * 5 + ["-"] * 4 + ["0", "-", "-", "0", "0", "-"]
    assert cells(result.stdout, SUPPORT, "2021-03-02")[7] == "20m 00s"

    weekly = runner.invoke(cli(), [*args, "--by", "week"])
    assert weekly.exit_code == 0, weekly.output
    assert cells(weekly.stdout, BILLING, "2021-03-01")[2:8] == ["3", "3", "1", "2", "6", "1h 30m"]
    assert cells(weekly.stdout, BILLING, "2021-03-01")[-1] == "57.14%"


def test_cli_csv_matches_the_function(seeded: None, cli_env: None) -> None:
    # one department and no --tz: its own zone (Berlin), where T2 belongs to Tuesday
    result = runner.invoke(
        cli(), ["report", "--department", BILLING, "--from", "2021-03-01", "--to", "2021-03-07", "--csv"]
    )
    assert result.exit_code == 0, result.output
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(parsed[0]) == list(ReportRow.model_fields)
    assert [r["period_start"] for r in parsed] == [f"2021-03-0{d}T00:00:00+01:00" for d in range(1, 8)]
    assert [int(r["created"]) for r in parsed] == [1, 1, 1, 0, 0, 0, 0]
    tuesday = parsed[1]
    assert float(tuesday["avg_first_response_seconds"]) == 3600
    assert (tuesday["positive_pct"], tuesday["negative_pct"], tuesday["sla_compliance_pct"]) == (
        "100.00",
        "0.00",
        "50.00",
    )
    assert parsed[6]["avg_first_response_seconds"] == "" and parsed[6]["sla_clocks"] == "0"

    # every column equals the function's figure for the same range
    start = datetime(2021, 3, 1, tzinfo=BERLIN)
    rows = _sync_report([BILLING], "day", start, start + timedelta(days=7), "Europe/Berlin")
    for line, row in zip(parsed, rows, strict=True):
        for name, value in row.model_dump().items():
            expected = row.period_start.astimezone(BERLIN).isoformat() if name == "period_start" else value
            assert line[name] == ("" if expected is None else str(expected)), name


def _sync_report(departments: list[str], by: str, start: datetime, end: datetime, tz: str) -> list[ReportRow]:
    """The function's answer from a sync test (the CLI runs its own event loop, so these tests are sync)."""

    async def go() -> list[ReportRow]:
        async with await AsyncConnection.connect(os.environ["DATABASE_URL"]) as conn:
            return await department_report(conn, departments, by, start, end, tz)

    return asyncio.run(go())


def test_cli_usage_errors(seeded: None, cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_by = runner.invoke(cli(), ["report", "--by", "year"])
    assert bad_by.exit_code == 2
    assert "--by must be day, week or month, not 'year'" in bad_by.stderr

    unknown = runner.invoke(cli(), ["report", "-d", BILLING, "-d", "nope"])
    assert unknown.exit_code == 2
    assert "unknown department 'nope'" in unknown.stderr
    assert (
        "known departments:" in unknown.stderr and "technical_support" in unknown.stderr and BILLING in unknown.stderr
    )

    bad_date = runner.invoke(cli(), ["report", "--from", "2021-02-30"])
    assert bad_date.exit_code == 2
    assert "--from '2021-02-30' is not a date: use YYYY-MM-DD" in bad_date.stderr

    backwards = runner.invoke(cli(), ["report", "--from", "2021-03-08", "--to", "2021-03-01"])
    assert backwards.exit_code == 2 and "--from 2021-03-08 is after --to 2021-03-01" in backwards.stderr

    bad_zone = runner.invoke(cli(), ["report", "--tz", "Mars/Olympus"])
    assert bad_zone.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in bad_zone.stderr

    monkeypatch.delenv("DATABASE_URL")
    no_db = runner.invoke(cli(), ["report"])
    assert no_db.exit_code == 1 and "DATABASE_URL is not set" in no_db.stderr
