"""SLA clocks in business hours on the time-skipping server: each metric met, breached, paused and
resumed in the department's opening hours; deadlines recomputed when priority, department or policy
change; escalation driven by breaches; staff notices held out of hours; exact figures in Postgres."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import InvalidTransition, TicketClient
from starter.smtp_sink import SmtpSink
from tests.conftest import WorkerFactory, start_time_skipping
from tests.factories import ticket
from tests.test_replay import HISTORIES, RECORDING_AS, replayer
from ticketflow.calendar import BusinessCalendar, Weekday
from ticketflow.config import Config
from ticketflow.ids import workflow_id
from ticketflow.models import Priority, Status

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
# Technical Support (eu_office: Mon-Fri 08-18, Sat 10-14, Europe/Berlin), normal priority:
# first response 4 h, next reply 8 h, resolution 24 h, all in business hours.
EXPORT_ERROR = {"subject": "Export shows an error", "body": "The CSV export shows an error message."}
H = 3600


def near(a: datetime | None, b: datetime) -> bool:
    """The test server's clock lands a few milliseconds after each skip; deadlines follow it."""
    return a is not None and abs((a - b).total_seconds()) < 1


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test: these tests jump to chosen weekdays and hours, and the
    Java test server can stop skipping after a workflow it ran was terminated mid-activity."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


async def skip_to(env: WorkflowEnvironment, at: datetime) -> None:
    now = await env.get_current_time()
    assert at > now, f"cannot skip back from {now} to {at}"
    await env.sleep(at - now)


async def next_weekday_at(
    env: WorkflowEnvironment, cal: BusinessCalendar, weekday: int, at: time, zone: ZoneInfo, clear_days: int = 4
) -> datetime:
    """The next local `weekday` at `at` such that it and the following days are no holidays."""
    day = (await env.get_current_time()).astimezone(zone).date() + timedelta(days=1)
    while day.weekday() != weekday or any(cal.is_holiday(day + timedelta(days=i)) for i in range(clear_days)):
        day += timedelta(days=1)
    return datetime.combine(day, at, tzinfo=zone)


async def sla_events(pool: Pool, ticket_id: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT metric, event, elapsed_seconds, target_seconds, business, fraction, at FROM sla_events"
            " WHERE ticket_id = %s ORDER BY seq, metric",
            (ticket_id,),
        )
        return await cur.fetchall()


async def audit(pool: Pool, ticket_id: str, event: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT seq, detail, at FROM audit_log WHERE ticket_id = %s AND event = %s ORDER BY seq", (ticket_id, event)
        )
        return await cur.fetchall()


async def open_at(tickets: TicketClient, env: WorkflowEnvironment, at: datetime, **fields: Any) -> str:
    await skip_to(env, at)
    opened = await tickets.open(ticket(**fields))
    state = await tickets.wait_for(opened.ticket_id, Status.OPEN)
    return state.ticket_id


async def test_first_response_counts_only_business_hours_over_a_weekend(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    config: Config,
) -> None:
    cal = config.calendars["eu_office"]
    friday = await next_weekday_at(ts_env, cal, 4, time(15, 30), BERLIN)
    saturday = friday.date() + timedelta(days=1)
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, friday, **EXPORT_ERROR)
        state = await tickets.get(tid)
        assert (state.department, state.priority) == ("technical_support", "normal")
        first = state.sla["first_response"]
        assert first.business and first.target_seconds == 4 * H
        # Friday 15:30-18:00 (2.5 h), then Saturday 10:00-11:30 (1.5 h)
        assert near(first.due_at(cal), datetime.combine(saturday, time(11, 30), tzinfo=BERLIN))
        await skip_to(ts_env, datetime.combine(saturday, time(11, 29), tzinfo=BERLIN))
        assert not (await tickets.get(tid)).sla["first_response"].breached
        await skip_to(ts_env, datetime.combine(saturday, time(11, 31), tzinfo=BERLIN))
        state = await tickets.get(tid)
        assert state.sla["first_response"].breached and state.sla_breached

    reminders = {
        r["detail"]["fraction"]: r["at"].astimezone(BERLIN)
        for r in await audit(pool, tid, "sla_reminder")
        if r["detail"]["metric"] == "first_response"
    }
    assert near(reminders[0.5], friday.replace(hour=17, minute=30))  # 2 business hours
    assert near(reminders[0.75], datetime.combine(saturday, time(10, 30), tzinfo=BERLIN))  # 3: over the night
    breach = [e for e in await sla_events(pool, tid) if e["event"] == "breached"]
    assert breach[0]["metric"] == "first_response" and breach[0]["elapsed_seconds"] == pytest.approx(4 * H, abs=1)
    assert near(breach[0]["at"], datetime.combine(saturday, time(11, 30), tzinfo=BERLIN))


async def test_pause_resume_and_next_reply_are_recorded_in_business_time(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    config: Config,
) -> None:
    cal = config.calendars["eu_office"]
    monday = await next_weekday_at(ts_env, cal, 0, time(9, 0), BERLIN)
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        await skip_to(ts_env, monday.replace(hour=10))
        state = await tickets.reply(tid, "anna", "Which browser do you use?", pend=True)
        assert state.status == Status.PENDING and state.sla["resolution"].paused
        await skip_to(ts_env, monday.replace(hour=20))  # after hours: the reply arrives while closed
        state = await tickets.customer_reply(tid, "Firefox 140.")
        next_reply = state.sla["next_reply"]
        assert next_reply.business and next_reply.target_seconds == 8 * H
        # Tuesday 08:00 is the first business second after the reply; 8 business hours later: 16:00
        assert near(next_reply.due_at(cal), (monday + timedelta(days=1)).replace(hour=16))
        await skip_to(ts_env, (monday + timedelta(days=1)).replace(hour=9, minute=30))
        state = await tickets.reply(tid, "anna", "Fixed in today's release.")
        assert state.sla["next_reply"].fulfilled_at is not None
        await tickets.resolve(tid, "anna")
        state = await tickets.get(tid)

    events = [(e["metric"], e["event"], e["elapsed_seconds"]) for e in await sla_events(pool, tid)]
    assert ("first_response", "fulfilled", pytest.approx(H, abs=1)) in events
    assert ("resolution", "paused", pytest.approx(H, abs=1)) in events
    assert ("resolution", "resumed", pytest.approx(H, abs=1)) in events  # nothing counted while pending
    assert ("next_reply", "started", 0) in events
    assert ("next_reply", "fulfilled", pytest.approx(1.5 * H, abs=1)) in events  # 08:00-09:30 Tuesday
    # resolution: Monday 09-10 (1 h) + Tuesday 08:00-09:30 (1.5 h)
    assert ("resolution", "fulfilled", pytest.approx(2.5 * H, abs=1)) in events
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT metric, breached, fulfilled, business_seconds_to_fulfil FROM sla_outcomes"
                " WHERE ticket_id = %s ORDER BY metric",
                (tid,),
            )
        ).fetchall()
    assert [
        (r["metric"], r["breached"], r["fulfilled"], round(r["business_seconds_to_fulfil"] / 60)) for r in rows
    ] == [("first_response", False, True, 60), ("next_reply", False, True, 90), ("resolution", False, True, 150)]
    async with pool.connection() as conn:
        daily = await (
            await conn.execute(
                "SELECT metric, clocks, met, breached, compliance_pct FROM sla_daily"
                " WHERE department = 'technical_support' AND priority = 'normal' AND day = %s ORDER BY metric",
                ((monday + timedelta(days=1)).astimezone(UTC).date(),),
            )
        ).fetchall()
    mine = {d["metric"]: d for d in daily}
    assert mine["resolution"]["clocks"] >= 1 and mine["next_reply"]["clocks"] >= 1
    assert all(0 <= d["compliance_pct"] <= 100 for d in daily)
    views = {v.metric: v for v in state.clocks}
    assert views["resolution"].met_at is not None and views["resolution"].counts == "business hours"
    assert views["resolution"].elapsed_seconds == pytest.approx(2.5 * H, abs=1)
    pauses = await audit(pool, tid, "agent_reply")
    assert pauses[0]["detail"]["pend"] is True  # the pause itself is in the audit log


async def test_priority_change_recomputes_every_deadline(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    config: Config,
) -> None:
    cal = config.calendars["eu_office"]
    monday = await next_weekday_at(ts_env, cal, 0, time(9, 0), BERLIN)
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        assert near((await tickets.get(tid)).sla["first_response"].due_at(cal), monday.replace(hour=13))
        await skip_to(ts_env, monday.replace(minute=20))
        state = await tickets.change_priority(tid, "anna", Priority.URGENT, "customer's production is blocked")
        first = state.sla["first_response"]
        # urgent: 30 minutes around the clock; the 20 minutes already used count
        assert first.target_seconds == 30 * 60 and not first.business
        assert near(first.due_at(cal), monday.replace(minute=30))
        assert state.sla["resolution"].target_seconds == 4 * H
        with pytest.raises(InvalidTransition, match="already urgent"):
            await tickets.change_priority(tid, "anna", Priority.URGENT)
        await skip_to(ts_env, monday.replace(minute=31))
        state = await tickets.get(tid)
        assert state.sla["first_response"].breached  # at 09:30, not 13:00
    breach = [e for e in await sla_events(pool, tid) if e["event"] == "breached"]
    assert near(breach[0]["at"], monday.replace(minute=30))
    retargeted = [e for e in await sla_events(pool, tid) if e["event"] == "retargeted"]
    assert {e["metric"] for e in retargeted} == {"first_response", "resolution", "tier"}


async def test_transfer_moves_deadlines_to_the_new_departments_hours(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, config: Config
) -> None:
    eu, us = config.calendars["eu_office"], config.calendars["us_east"]
    monday = await next_weekday_at(ts_env, eu, 0, time(15, 0), BERLIN)
    assert not us.is_holiday(monday.date())
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        await skip_to(ts_env, monday.replace(hour=16))
        with pytest.raises(InvalidTransition, match="unknown department"):
            await tickets.transfer(tid, "anna", "marketing")
        state = await tickets.transfer(tid, "anna", "billing", "this is about an invoice export")
        assert state.department == "billing" and state.assignee in {"james", "carmen"} and state.tier == 1
        first = state.sla["first_response"]
        # 1 business hour used in Berlin; billing (normal) wants a first response in 2 h on New York hours,
        # which run until 20:00 local: 16:00 Berlin is 10:00 New York, so 1 h left -> 11:00 New York
        assert first.target_seconds == 2 * H
        assert near(first.due_at(us), monday.astimezone(NEW_YORK).replace(hour=11))


async def test_resolution_breach_escalates_and_a_tier_4_breach_pages_the_lead(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    urgent = {"subject": "URGENT: production down", "body": "Our production is down, this is an emergency."}
    async with make_worker(ts_client, task_queue):
        first = (await tickets.open(ticket(**urgent))).ticket_id
        second = (await tickets.open(ticket(**urgent))).ticket_id
        for tid in (first, second):
            await tickets.wait_for(tid, Status.OPEN)
            await tickets.reply(tid, "anna", "On it.")  # first response met: only resolution can breach
        for n in (2, 3, 4):
            await tickets.escalate(second, "anna", f"to tier {n}")
        state = await tickets.deescalate(second, "ines", "a tier-3 specialist can take it")
        assert state.tier == 3 and state.escalations[-1].cause == "manual"
        await tickets.escalate(second, "ines", "back to me")
        await ts_env.sleep(timedelta(hours=4, minutes=1))  # urgent resolution: 4 h around the clock
        state = await tickets.get(first)
        assert state.sla["resolution"].breached
        assert (state.escalations[0].from_tier, state.escalations[0].to_tier, state.escalations[0].cause) == (
            1,
            2,
            "breach",
        )
        assert (await tickets.get(second)).tier == 4
    pages = [m for m in smtp.messages if m.subject.startswith("[PAGE]") and f"#{second}" in m.subject]
    assert len(pages) == 1 and pages[0].rcpt_tos == ["ines.weber@northwind.example"]
    assert not [m for m in smtp.messages if m.subject.startswith("[PAGE]") and f"#{first}" in m.subject]


@pytest.fixture
def high_in_calendar_hours(config: Config) -> Config:
    """High priority counted around the clock, but staff notices only in business hours."""
    targets = dict(config.sla.targets)
    targets[Priority.HIGH] = targets[Priority.HIGH].model_copy(update={"hours": "calendar"})
    return config.model_copy(update={"sla": config.sla.model_copy(update={"targets": targets})})


async def test_out_of_hours_notices_wait_for_opening_unless_urgent(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
    high_in_calendar_hours: Config,
) -> None:
    cal = high_in_calendar_hours.calendars["eu_office"]
    saturday = await next_weekday_at(ts_env, cal, 5, time(20, 0), BERLIN)
    monday_open = datetime.combine(saturday.date() + timedelta(days=2), time(8), tzinfo=BERLIN)
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue, high_in_calendar_hours):
        tid = await open_at(tickets, ts_env, saturday, subject="Cannot log in", body="I cannot log in since today.")
        assert (await tickets.get(tid)).priority == "high"
        await skip_to(ts_env, saturday + timedelta(hours=2))  # 50/75/90 % and the breach, all after hours
        state = await tickets.get(tid)
        assert state.sla["first_response"].breached  # the clock itself is exact...
        assert {h.note.template for h in state.held} == {"sla_reminder", "sla_breach"}
        assert all(near(h.release_at, monday_open) for h in state.held)
        staff = [m for m in smtp.messages if f"#{tid}" in m.subject and "SLA" in m.subject]
        assert staff == []  # ...but nobody is woken up at night
        await skip_to(ts_env, monday_open + timedelta(minutes=1))
        assert (await tickets.get(tid)).held == []
        history = await ts_client.get_workflow_handle(workflow_id(tid)).fetch_history()
    await replayer().replay_workflow(history)  # held notices take the old path inside the new patch
    if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / f"{RECORDING_AS}--held-staff-notices-out-of-hours.json").write_text(history.to_json(), "utf-8")
    staff = [m for m in smtp.messages if f"#{tid}" in m.subject and "SLA" in m.subject]
    assert any("BREACHED" in m.subject for m in staff) and len(staff) >= 3
    held = await audit(pool, tid, "notification_held")
    assert held and all(near(datetime.fromisoformat(h["detail"]["until"]), monday_open) for h in held)


def test_sla_matrix_overrides() -> None:
    from ticketflow.config import default_config

    sla = default_config().sla
    assert sla.resolve("technical_support", Priority.NORMAL, None).seconds["first_response"] == 4 * H
    assert sla.resolve("technical_support", Priority.NORMAL, "vip").seconds["first_response"] == 2 * H  # type: ignore[arg-type]
    assert sla.resolve("billing", Priority.NORMAL, None).seconds["first_response"] == 2 * H
    assert sla.resolve("billing", Priority.HIGH, None).seconds["first_response"] == 1 * H
    assert set(sla.resolve("sales", Priority.URGENT, None).hours.values()) == {"calendar"}
    assert set(sla.resolve("sales", Priority.LOW, None).hours.values()) == {"business"}
    mixed = sla.model_copy(update={"metric_hours": {"resolution": "calendar"}})
    hours = mixed.resolve("sales", Priority.LOW, None).hours
    assert hours == {
        "first_response": "business",
        "next_reply": "business",
        "resolution": "calendar",
        "tier": "calendar",
    }


async def test_next_reply_breach_is_its_own_clock_and_does_not_escalate(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    config: Config,
) -> None:
    cal = config.calendars["eu_office"]
    monday = await next_weekday_at(ts_env, cal, 0, time(9, 0), BERLIN)
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        await skip_to(ts_env, monday.replace(minute=10))
        await tickets.reply(tid, "anna", "Does it happen with every file?")
        await skip_to(ts_env, monday.replace(minute=20))
        await tickets.customer_reply(tid, "Yes, every file.")
        await skip_to(ts_env, monday.replace(minute=30))
        state = await tickets.customer_reply(tid, "Any news?")  # the clock keeps the oldest unanswered message
        assert near(state.sla["next_reply"].due_at(cal), monday.replace(hour=17, minute=20))
        await skip_to(ts_env, monday.replace(hour=17, minute=21))
        state = await tickets.get(tid)
        assert state.sla["next_reply"].breached and not state.sla["resolution"].breached
        # the tier-1 budget (4 business hours) moved it at 13:00; the next-reply breach did not move it again:
        # only a resolution breach moves tiers by default
        assert [(e.to_tier, e.cause) for e in state.escalations] == [(2, "timer")]
    breaches = [e for e in await sla_events(pool, tid) if e["event"] == "breached"]
    assert [(b["metric"], round(b["elapsed_seconds"] / 60)) for b in breaches] == [("next_reply", 480)]


async def test_policy_refresh_applies_new_targets_and_hours_to_a_live_ticket(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, config: Config
) -> None:
    """An operator edits the policy file (normal first response 4 h -> 1 h, Technical Support now open
    from 07:00) and refreshes a live ticket: the hour already used counts, the rest follows the new file."""
    cal = config.calendars["eu_office"]
    monday = await next_weekday_at(ts_env, cal, 0, time(9, 0), BERLIN)
    targets = dict(config.sla.targets)
    targets[Priority.NORMAL] = targets[Priority.NORMAL].model_copy(update={"first_response_minutes": 90})
    early = BusinessCalendar.model_validate(
        {**cal.model_dump(), "weekly": {day: [{"start": "07:00", "end": "18:00"}] for day in ("mon", "tue")}}
    )
    edited = config.model_copy(
        update={
            "sla": config.sla.model_copy(update={"targets": targets}),
            "calendars": {**config.calendars, "eu_office": early},
        }
    )
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue) as activities:
        tid = await open_at(tickets, ts_env, monday, **EXPORT_ERROR)
        await skip_to(ts_env, monday.replace(hour=10))
        activities.config = edited  # what a worker restarted with the edited file loads
        state = await tickets.refresh_policy(tid, "ops", "first response target tightened")
        first = state.sla["first_response"]
        assert first.target_seconds == 90 * 60
        assert first.elapsed(monday.replace(hour=10), state.policy.calendar if state.policy else None) == (
            pytest.approx(H, abs=1)
        )
        assert near(first.due_at(state.policy.calendar if state.policy else None), monday.replace(hour=10, minute=30))
        assert state.policy is not None and state.policy.calendar is not None
        assert state.policy.calendar.weekly[Weekday.MON][0].start == time(7)
