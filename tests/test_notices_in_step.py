"""An SLA reminder or breach and its staff mails in one step (patch "notices-in-step"): the audit entry and the
mails' outbox rows commit together, then each mail gets one delivery attempt inside the same activity. A mail
not delivered there (the relay down or silent, or a retried step) stays pending and goes on in the background
through `notify`, as every other mail does; nothing is lost and nothing is sent twice. Real PostgreSQL, real
SMTP servers (aiosmtpd, and a socket that never answers) and the time-skipping server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import TicketActivities
from activities import tickets as ticket_activities
from activities.mail import SmtpSettings
from starter.client import TicketClient
from starter.devstack import free_port
from starter.smtp_sink import SmtpSink
from tests.conftest import SURVEY_LINKS, StartRecorder, mail_settled, terminate_leftovers, wall_clock
from tests.factories import ticket
from tests.test_timers import URGENT, events, open_ticket
from ticketflow.config import Config, default_config
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import AuditEntry, EntryWithNotices, Notification, NotificationResult, OpenRequest
from ticketflow.temporal import LOCAL_ACTIVITY_MARKER
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


async def outbox(pool: Pool, tid: str, template: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT key, recipient, status, attempts, interrupted, attempt_open, last_error FROM outbox"
            " WHERE ticket_id = %s AND template = %s ORDER BY key",
            (tid, template),
        )
        return await cur.fetchall()


def scheduled(history: Any) -> Counter[str]:
    """The steps a history ran, by activity type: each activity scheduled, and each local activity's marker as
    `type (local)` (one per step that succeeded at once; a local activity that backs off on a timer leaves a
    marker per round)."""
    steps: Counter[str] = Counter()
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            steps[e.activity_task_scheduled_event_attributes.activity_type.name] += 1
        elif e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == LOCAL_ACTIVITY_MARKER:
                [data] = marker.details["data"].payloads
                steps[f"{json.loads(data.data)['activity_type']} (local)"] += 1
    return steps


async def test_reminders_and_breach_send_their_staff_mails_from_the_step_that_writes_them(
    ts_env: WorkflowEnvironment, pool: Pool, config: Config, smtp: SmtpSink, task_queue: str
) -> None:
    recorder = StartRecorder()
    client_config = ts_env.client.config()
    client_config["interceptors"] = [recorder]
    client = Client(**client_config)
    tickets = TicketClient(client, task_queue)
    relay = SmtpSettings(host=smtp.host, port=smtp.port)
    try:
        async with build_worker(client, task_queue, pool, config, relay, survey_links=SURVEY_LINKS):
            tid = await open_ticket(tickets, **URGENT)
            await ts_env.sleep(timedelta(minutes=31))  # reminders at 50, 75 and 90 % of 30 min, then the breach
            assert (await tickets.get(tid)).sla["first_response"].breached
            await mail_settled(client, tid)
            history = await client.get_workflow_handle(workflow_id(tid)).fetch_history()
    finally:
        await terminate_leftovers(client, recorder.ids)
    written = [
        (e["event"], e["detail"]["fraction"])
        for e in await events(pool, tid, "sla_reminder", "sla_breach")
        if e["detail"]["metric"] == "first_response"
    ]
    assert written == [("sla_reminder", 0.5), ("sla_reminder", 0.75), ("sla_reminder", 0.9), ("sla_breach", 1.0)]
    # Four steps wrote the four entries and their mails, and the opening step the acknowledgement: no `notify`.
    assert scheduled(history) == {"open_ticket (local)": 1, "record_and_notify": 4}
    staff = await outbox(pool, tid, "sla_reminder") + await outbox(pool, tid, "sla_breach")
    lead = "ines.weber@northwind.example"
    # the assignee at each reminder; the lead as well at the last one (90 %) and at the breach
    assert sorted(r["recipient"] == lead for r in staff) == [False] * 4 + [True] * 2
    assert {(r["status"], r["attempts"], r["interrupted"]) for r in staff} == {("sent", 1, 0)}
    delivered = Counter(m.message_id for m in smtp.messages if f"#{tid}" in m.subject)
    assert len(delivered) == 7 and set(delivered.values()) == {1}  # the six, the acknowledgement, each once


async def test_a_relay_down_at_the_deadline_hands_the_mails_to_the_background(
    ts_env: WorkflowEnvironment, pool: Pool, config: Config, task_queue: str
) -> None:
    relay = SmtpSink(port=free_port())  # down until the reminder has been written
    recorder = StartRecorder()
    client_config = ts_env.client.config()
    client_config["interceptors"] = [recorder]
    client = Client(**client_config)
    tickets = TicketClient(client, task_queue)
    try:
        smtp = SmtpSettings(host="127.0.0.1", port=relay.port, timeout=2)
        async with build_worker(client, task_queue, pool, config, smtp, survey_links=SURVEY_LINKS):
            tid = await open_ticket(tickets, **URGENT)
            await ts_env.sleep(timedelta(minutes=16))  # the 50 % reminder
            assert [e["detail"]["fraction"] for e in await events(pool, tid, "sla_reminder")] == [0.5]
            [row] = await outbox(pool, tid, "sla_reminder")
            assert row["status"] == "pending" and row["attempts"] >= 1, row
            assert "Connect" in (row["last_error"] or ""), row
            relay.start()
            await ts_env.sleep(timedelta(minutes=5, seconds=30))  # retries come every 5 min at most; 75 %: 22.5 min
            await mail_settled(client, tid)
            history = await client.get_workflow_handle(workflow_id(tid)).fetch_history()
    finally:
        relay.stop()
        await terminate_leftovers(client, recorder.ids)
    # the step wrote the reminder and tried once; `notify` took the mail on, as it took the acknowledgement
    assert scheduled(history) == {"open_ticket (local)": 1, "record_and_notify": 1, "notify": 2}
    [row] = await outbox(pool, tid, "sla_reminder")
    assert row["status"] == "sent" and row["interrupted"] == 0
    delivered = Counter(m.message_id for m in relay.messages)
    assert len(delivered) == 2 and set(delivered.values()) == {1}  # the acknowledgement and the reminder, once


async def reminder_step(acts: TicketActivities) -> EntryWithNotices:
    tid, at = ticket_id_for(None), datetime.now(UTC)
    seq = (await acts.open_ticket(OpenRequest(ticket_id=tid, raw=ticket(), at=at))).audit_seq + 1
    detail = {"metric": "first_response", "fraction": 0.5, "target_seconds": 1800, "elapsed_seconds": 900.0}
    entry = AuditEntry(ticket_id=tid, seq=seq, event="sla_reminder", actor="system", at=at, detail=detail)
    notes = [
        Notification(
            key=f"sla_reminder:{tid}:{seq}:{to}", ticket_id=tid, template="sla_reminder", to=to, context=detail
        )
        for to in ("assignee", "lead")
    ]
    return EntryWithNotices(entry=entry, notes=notes)


async def run_step(acts: TicketActivities, step: EntryWithNotices, attempt: int = 1) -> list[NotificationResult]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return await env.run(acts.record_and_notify, step)


async def test_a_retried_step_leaves_delivery_to_notify_and_sends_nothing_twice(
    pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings
) -> None:
    """A step retried after its first attempt timed out (a slow relay, a lost result) only makes sure of its
    rows: the first attempt may still be delivering, and the ticket should not wait on the relay twice."""
    acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    step = await reminder_step(acts)
    tid = step.entry.ticket_id
    results = await run_step(acts, step, attempt=2)
    assert [r.status for r in results] == ["pending", "pending"]
    assert [r["status"] for r in await outbox(pool, tid, "sla_reminder")] == ["pending", "pending"]
    assert [e["event"] for e in await events(pool, tid, "sla_reminder")] == ["sla_reminder"]
    assert not [m for m in smtp.messages if f"#{tid}" in m.subject]
    for note in step.notes:  # what the workflow does with a pending mail
        assert (await ActivityEnvironment().run(acts.notify, note)).status == "sent"
    results = await run_step(acts, step, attempt=3)  # yet another retry: nothing left to do
    assert [r.status for r in results] == ["already_sent", "already_sent"]
    assert [e["event"] for e in await events(pool, tid, "sla_reminder")] == ["sla_reminder"]  # written once
    delivered = Counter(m.message_id for m in smtp.messages if f"#{tid}" in m.subject)
    assert len(delivered) == 2 and set(delivered.values()) == {1}


async def test_a_silent_relay_holds_the_step_for_the_inline_timeout_only(
    pool: Pool, config: Config, silent_relay: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's own timeout (20 s, for `notify`) is cut to the inline one for the step's attempt, and once one
    mail's attempt has failed the step leaves the next to `notify` without trying the same relay again."""
    monkeypatch.setattr(ticket_activities, "INLINE_SMTP_TIMEOUT", 0.5)  # 5 s in production; the test waits less
    acts = TicketActivities(pool, config, SmtpSettings(host="127.0.0.1", port=silent_relay, timeout=20))
    step = await reminder_step(acts)
    results = await asyncio.wait_for(run_step(acts, step), 10)  # two mails, 0.5 s for the first at most
    assert [r.status for r in results] == ["pending", "pending"]
    rows = await outbox(pool, step.entry.ticket_id, "sla_reminder")
    tried, left = sorted(rows, key=lambda r: -int(r["attempts"]))
    assert (tried["status"], tried["attempts"], tried["attempt_open"]) == ("pending", 1, False)
    assert (left["status"], left["attempts"], left["attempt_open"]) == ("pending", 0, False)
    assert "Timeout" in (tried["last_error"] or ""), rows


async def test_a_mail_that_does_not_render_holds_neither_the_entry_nor_the_other_mails(
    pool: Pool, config: Config, smtp: SmtpSink, smtp_settings: SmtpSettings
) -> None:
    """A template or policy fault in one mail (here a template that does not exist) must not keep the reminder
    out of the audit log, or the ticket in its step: the entry and the other mail go through, and the faulty one
    goes to `notify`, which fails on it as it did before the merge (and the workflow records why)."""
    acts = TicketActivities(pool, config, smtp_settings, survey_links=SURVEY_LINKS)
    step = await reminder_step(acts)
    broken = step.notes[1].model_copy(update={"template": "no_such_template", "key": step.notes[1].key + ":broken"})
    step = step.model_copy(update={"notes": [step.notes[0], broken]})
    tid = step.entry.ticket_id
    results = await run_step(acts, step)
    assert [r.status for r in results] == ["sent", "pending"]
    assert [e["event"] for e in await events(pool, tid, "sla_reminder")] == ["sla_reminder"]
    assert [r["key"] for r in await outbox(pool, tid, "sla_reminder")] == [step.notes[0].key]  # no half-written row
    with pytest.raises(Exception, match="no_such_template"):
        await ActivityEnvironment().run(acts.notify, broken)
    assert len([m for m in smtp.messages if f"#{tid}" in m.subject]) == 1
