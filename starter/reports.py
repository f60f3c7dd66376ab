"""`ticketflow report`: the LiveAgent-style department report.

The figures come from the SQL function department_report() (migration 0004), the same one the Grafana
dashboard calls, so the CLI and the dashboard can never disagree about what a number means.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, NoReturn, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from psycopg import AsyncConnection, Error, OperationalError
from psycopg.errors import UndefinedFunction
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from starter.access_cli import AsOption, cli_viewer, denied
from ticketflow.access import AccessDenied
from ticketflow.config import Config, Settings

Bucket = Literal["day", "week", "month"]
BUCKETS: tuple[str, ...] = get_args(Bucket)
DEFAULT_DAYS = 30  # --from defaults to this many days before --to

_REPORT_SQL = "SELECT * FROM department_report(%s::text[], %s, %s, %s, %s)"


class ReportRow(BaseModel):
    """One department and period, exactly as department_report() returns it (seconds, percentages 0-100)."""

    department: str
    period_start: datetime
    created: int
    resolved: int
    reopened: int
    answered: int
    agent_replies: int
    avg_first_response_seconds: float | None
    avg_first_response_business_seconds: float | None
    avg_next_response_business_seconds: float | None
    avg_resolution_business_seconds: float | None
    ratings: int
    positive_pct: Decimal | None
    negative_pct: Decimal | None
    sla_clocks: int
    sla_met: int
    sla_compliance_pct: Decimal | None


async def department_report(
    pool_or_conn: AsyncConnectionPool[Any] | AsyncConnection[Any],
    departments: list[str] | None,
    by: str,
    start: datetime,
    end: datetime,
    tz: str,
) -> list[ReportRow]:
    """The report for [start, end) in periods of `by` in time zone `tz`; no departments means all.

    Instants must be time-zone aware: a naive one would be read in the server's zone, silently shifting days.
    """
    if by not in BUCKETS:
        raise ValueError(f"by must be one of {', '.join(BUCKETS)}, not {by!r}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be time-zone aware")
    params = (departments or None, by, start, end, tz)
    if isinstance(pool_or_conn, AsyncConnection):
        return await _fetch(pool_or_conn, params)
    async with pool_or_conn.connection() as conn:
        return await _fetch(conn, params)


async def _fetch(conn: AsyncConnection[Any], params: tuple[Any, ...]) -> list[ReportRow]:
    # dict rows whatever the connection's own row factory is (pool connections use dict_row, others may not)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_REPORT_SQL, params)
        return [ReportRow.model_validate(row) for row in await cur.fetchall()]


# --- presentation --------------------------------------------------------------------------------------


def human_duration(seconds: float | None) -> str:
    """Durations as a manager reads them: 45s, 12m 05s, 2h 05m, 3d 04h (the last unit rounded)."""
    if seconds is None:
        return "-"
    if round(seconds) < 3600:
        s = round(seconds)
        return f"{s}s" if s < 60 else f"{s // 60}m {s % 60:02d}s"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60}h {minutes % 60:02d}m"
    hours = round(seconds / 3600)
    return f"{hours // 24}d {hours % 24:02d}h"


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def period_label(start: datetime, by: str, zone: ZoneInfo) -> str:
    """The period as a local date: days and weeks (from Monday) by their first day, months as YYYY-MM."""
    local = start.astimezone(zone)
    return f"{local:%Y-%m}" if by == "month" else f"{local:%Y-%m-%d}"


def _figures(r: ReportRow) -> dict[str, str]:
    """Every figure of a row in human units, keyed by its (short, multi-line) column header."""
    return {
        "created": str(r.created),
        "resolved": str(r.resolved),
        "reopened": str(r.reopened),
        "answered": str(r.answered),
        "replies": str(r.agent_replies),
        "first\nresponse": human_duration(r.avg_first_response_seconds),
        "first\nresponse\nbusiness": human_duration(r.avg_first_response_business_seconds),
        "next\nresponse\nbusiness": human_duration(r.avg_next_response_business_seconds),
        "resolution\nbusiness": human_duration(r.avg_resolution_business_seconds),
        "ratings": str(r.ratings),
        "positive": _pct(r.positive_pct),
        "negative": _pct(r.negative_pct),
        "SLA\nclocks": str(r.sla_clocks),
        "SLA\nmet": str(r.sla_met),
        "SLA\ncompliance": _pct(r.sla_compliance_pct),
    }


_VOLUME = ("created", "resolved", "reopened", "answered", "replies", "ratings", "positive", "negative")


def _table(rows: list[ReportRow], by: str, zone: ZoneInfo, title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    longest = max((len(r.department) for r in rows), default=0)
    table.add_column("department", min_width=min(longest, 32), overflow="fold")
    table.add_column({"day": "day", "week": "week\nfrom", "month": "month"}.get(by, by), overflow="fold")
    for name in columns:
        table.add_column(name, justify="right", overflow="fold")  # squeezed, a figure wraps: never an ellipsis
    for r in rows:
        figures = _figures(r)
        table.add_row(r.department, period_label(r.period_start, by, zone), *(figures[c] for c in columns))
    return table


def render_table(rows: list[ReportRow], by: str, zone: ZoneInfo, title: str, console: Console) -> None:
    """Rich table(s) in human units: one when the console is wide enough, else volume and times apart so no
    figure is cut. The console must have markup off: department names are data."""
    columns = list(_figures(rows[0])) if rows else []
    whole = _table(rows, by, zone, title, columns)
    natural = console.measure(whole, options=console.options.update_width(10_000)).maximum
    if natural <= console.width:
        console.print(whole)
        return
    volume = [c for c in columns if c in _VOLUME]
    console.print(_table(rows, by, zone, f"{title}: volume and ratings", volume))
    console.print(_table(rows, by, zone, f"{title}: response times and SLA", [c for c in columns if c not in volume]))


def write_csv(rows: list[ReportRow], zone: ZoneInfo, out: Any) -> None:
    """Machine units: seconds, plain numbers, ISO 8601 period starts in the report's zone; empty for none."""
    writer = csv.writer(out, lineterminator="\n")
    fields = list(ReportRow.model_fields)
    writer.writerow(fields)
    for r in rows:
        values = r.model_dump()
        values["period_start"] = r.period_start.astimezone(zone).isoformat()
        writer.writerow(["" if values[f] is None else values[f] for f in fields])


# --- the command ---------------------------------------------------------------------------------------


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _parse_day(option: str, value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        _usage_error(f"{option} {value!r} is not a date: use YYYY-MM-DD, e.g. 2025-03-31")


def _zone(name: str, origin: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        _usage_error(f"{origin}: unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC")


def _settings() -> tuple[Settings, Config]:
    try:
        settings = Settings()
        return settings, settings.policy()
    except (OSError, ValueError) as err:  # bad settings, a missing file, bad TOML or a policy that does not validate
        _fail(f"cannot load the settings or the policy: {err}")


async def _run_report(
    url: str, departments: list[str] | None, by: str, start: datetime, end: datetime, tz: str
) -> list[ReportRow]:
    async with await AsyncConnection.connect(url, connect_timeout=10) as conn:
        return await department_report(conn, departments, by, start, end, tz)


def report(
    department: Annotated[
        list[str] | None,
        typer.Option(
            "--department",
            "-d",
            metavar="KEY",
            help="A department key; repeat for several. Omitted: every department with tickets (with --as, "
            "every department of that agent or lead).",
        ),
    ] = None,
    by: Annotated[
        str, typer.Option("--by", metavar="day|week|month", help="Period length: day, week (from Monday) or month.")
    ] = "day",
    from_: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="YYYY-MM-DD", help=f"First day, YYYY-MM-DD. Default: {DEFAULT_DAYS} days before --to."
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="YYYY-MM-DD", help="Last day, YYYY-MM-DD, counted whole. Default: today."),
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Plain CSV on stdout, in seconds and plain numbers.")] = False,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            metavar="ZONE",
            help="Time zone of the days and periods. Default: the department's own when exactly one is asked, "
            "otherwise UTC.",
        ),
    ] = None,
    as_: AsOption = None,
) -> None:
    """Department report: created, resolved, reopened, answered, response times, ratings and SLA compliance
    per department and day, week or month, with every period shown even when nothing happened."""
    if by not in BUCKETS:
        _usage_error(f"--by must be day, week or month, not {by!r}")
    departments = list(dict.fromkeys(department)) if department else None
    settings, config = _settings()
    if departments:
        unknown = [d for d in departments if d not in config.departments]
        if unknown:
            _usage_error(
                f"unknown department {', '.join(repr(d) for d in unknown)}; "
                f"known departments: {', '.join(sorted(config.departments))}"
            )
    viewer = cli_viewer(as_, settings, config)
    try:
        scope = viewer.scope(departments)
    except AccessDenied as err:
        raise denied(err) from None
    if tz is not None:
        zone = _zone(tz, "--tz")
    elif departments and len(departments) == 1:
        zone = _zone(config.departments[departments[0]].timezone, f"time zone of department {departments[0]!r}")
    else:
        zone = ZoneInfo("UTC")
    last = _parse_day("--to", to) if to is not None else datetime.now(zone).date()
    first = _parse_day("--from", from_) if from_ is not None else last - timedelta(days=DEFAULT_DAYS)
    if first > last:
        _usage_error(f"--from {first.isoformat()} is after --to {last.isoformat()}")
    url = settings.database_url
    if not url:
        _fail("DATABASE_URL is not set: point it at ticketflow's PostgreSQL database")
    # local midnights, so a day is that zone's day (23 or 25 hours across a DST change); --to counts in full
    start = datetime.combine(first, time(), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)
    try:
        # an empty scope (a viewer without departments) must not reach SQL, where no departments means all
        rows = asyncio.run(_run_report(url, scope, by, start, end, zone.key)) if scope != [] else []
    except UndefinedFunction:
        _fail("department_report() is missing from the database: run a worker once so it applies the migrations")
    except OperationalError as err:
        _fail(f"cannot reach PostgreSQL at DATABASE_URL: {str(err).strip()}")
    except Error as err:
        _fail(f"the report query failed: {str(err).strip()}")

    if as_csv:
        write_csv(rows, zone, sys.stdout)
        return
    console = Console(markup=False, highlight=False, emoji=False)
    if not console.is_terminal:  # piped or captured: no terminal width to respect, so do not wrap cells
        console.width = max(console.width, 240)
    if scope == []:
        console.print(f"Nothing to report: {viewer.describe()} sees no department.")
        return
    if not rows:
        console.print("No departments with tickets yet.")
        return
    covered = ", ".join(scope) if scope else "all departments"
    title = f"Department report: {covered}, {first.isoformat()} to {last.isoformat()}, by {by}, {zone.key}"
    render_table(rows, by, zone, title, console)
