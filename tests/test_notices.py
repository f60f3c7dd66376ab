"""Customer notices: templates in eight languages, the out-of-hours auto-reply, the pending and
survey reminders, the reopen notice, and follow-up tickets after the window. Timers run on the
time-skipping server; mail arrives at a real SMTP server."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.mail import CUSTOMER_TEMPLATES, LANGUAGES, STAFF_TEMPLATES, Templates
from activities.template_check import check, sample_context
from starter.cli import app
from starter.client import InvalidTransition, TicketClient, TicketNotFound
from starter.smtp_sink import SmtpSink
from tests.conftest import WorkerFactory, mail_settled, wall_clock
from tests.factories import ticket
from ticketflow.calendar import BusinessCalendar, next_opening
from ticketflow.config import Config, default_config
from ticketflow.models import Status

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
TEMPLATES = Path(__file__).resolve().parent.parent / "activities" / "templates"


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


def mails(smtp: SmtpSink, ticket_id: str, fragment: str = "") -> list[Any]:
    return [m for m in smtp.messages if f"#{ticket_id}" in m.subject and fragment in m.subject]


# --- templates -----------------------------------------------------------------------------------------


def test_every_template_renders_in_every_language(config: Config) -> None:
    templates = Templates()
    assert set(templates.languages()) == set(LANGUAGES)
    assert check(templates, config) == []
    for lang in LANGUAGES:
        for name in CUSTOMER_TEMPLATES:
            assert templates.has(name, lang), f"{lang}/{name}"
    for name in STAFF_TEMPLATES:  # staff read English
        assert not templates.has(name, "de")


def test_customer_text_is_inert_in_subject_text_and_html(config: Config) -> None:
    mail = Templates().render("acknowledgement", sample_context(config, "en", "1-5"), "en")
    assert mail.subject == (
        "[#abcdefghijkl] We received your request: {{ 7*7 }} {% raw %}<script>alert(1)</script> Bcc: victim@example.com"
    )  # not evaluated, and the CR LF that would start a Bcc header is gone
    assert "{{ 7*7 }}" in mail.text and "49" not in mail.text
    assert "&lt;script&gt;" in mail.html and "<script>" not in mail.html
    assert "Ana &lt;b&gt;Pop&lt;/b&gt;" in mail.html


def test_a_missing_language_falls_back_to_english_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    templates = Templates()
    with caplog.at_level(logging.WARNING, logger="activities.mail"):
        assert templates.language_for("survey", "tlh") == "en"
    assert "no 'survey' template in language 'tlh'" in caplog.text
    assert templates.language_for("survey", "el") == "el"
    assert templates.language_for("sla_breach", "de") == "en"  # staff notices are English by design


def test_templates_check_fails_on_a_broken_or_missing_template(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["templates", "check"])
    assert ok.exit_code == 0, ok.output
    assert "8 languages" in ok.output

    broken = tmp_path / "templates"
    shutil.copytree(TEMPLATES, broken)
    survey = broken / "de" / "survey.txt"
    survey.write_text(survey.read_text("utf-8").replace("{{ ticket.subject }}", "{{ ticket.subjekt }}"), "utf-8")
    (broken / "ro" / "reopened.html").unlink()
    (broken / "fr" / "resolved.subject").write_text("[{{ ticket_ref }}] {% if %}", "utf-8")
    result = runner.invoke(app, ["templates", "check", "--dir", str(broken)])
    assert result.exit_code == 1
    assert "de/survey: UndefinedError" in result.output and "subjekt" in result.output
    assert "fr/resolved: TemplateSyntaxError" in result.output
    assert "ro/reopened" in result.output


# --- notices in the lifecycle ----------------------------------------------------------------------------


async def test_acknowledgement_in_the_customers_language_with_the_departments_signature(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        opened = await tickets.open(
            ticket(
                subject="Rechnung doppelt abgebucht",
                body="Guten Tag, die Rechnung wurde doppelt abgebucht. Bitte erstatten Sie den Betrag.",
                customer={"language": "de"},
            )
        )
        state = await tickets.wait_for(opened.ticket_id, Status.OPEN)
    assert state.language == "de" and state.department == "billing"
    (ack,) = mails(smtp, opened.ticket_id)
    assert "Rechnung doppelt abgebucht" in ack.subject and "We received" not in ack.subject
    assert "Northwind Cloud – Buchhaltung" in ack.text()  # billing's German signature
    assert "billing@northwind.example" in ack.mail_from
    assert ack.message["Message-ID"] == f"<ack.{opened.ticket_id}@ticketflow>"


def closed_calendar(tz: str, now: datetime) -> BusinessCalendar:
    """Open on weekdays 9-17, but today and tomorrow are holidays: closed `now`, whatever the hour."""
    today = now.astimezone(ZoneInfo(tz)).date()
    return BusinessCalendar.model_validate(
        {
            "timezone": tz,
            "weekly": {d: [{"start": "09:00", "end": "17:00"}] for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": [today, today + timedelta(days=1)],
        }
    )


async def test_out_of_hours_auto_reply_says_when_the_team_is_back(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    smtp: SmtpSink,
    config: Config,
) -> None:
    server_now = await ts_env.get_current_time()  # the test server's clock runs ahead of ours
    calendars = {**config.calendars, "closed_now": closed_calendar("Europe/Berlin", server_now)}
    departments = {k: d.model_copy(update={"calendar": "closed_now"}) for k, d in config.departments.items()}
    cfg = config.model_copy(update={"calendars": calendars, "departments": departments})
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue, cfg):
        opened = await tickets.open(ticket(subject="No puedo iniciar sesión", customer={"language": "es"}))
        state = await tickets.wait_for(opened.ticket_id, Status.OPEN)
    (auto_reply,) = mails(smtp, opened.ticket_id)
    assert auto_reply.message["Message-ID"] == f"<ack.{opened.ticket_id}@ticketflow>"  # replies still thread
    assert state.created_at is not None
    back = next_opening(calendars["closed_now"], state.created_at).astimezone(ZoneInfo("Europe/Berlin"))
    assert "No puedo iniciar sesión" in auto_reply.subject and "We received" not in auto_reply.subject
    assert f"{back:%Y-%m-%d %H:%M}" in auto_reply.text()  # when the team is back, in Spanish around it


async def test_one_pending_reminder_per_wait_on_the_customer(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        opened = await tickets.open(ticket())
        tid = opened.ticket_id
        await tickets.wait_for(tid, Status.OPEN)
        await tickets.reply(tid, "anna", "Which browser do you use?", pend=True)
        await ts_env.sleep(timedelta(hours=47))
        await mail_settled(ts_client, tid)
        assert mails(smtp, tid, "waiting for your reply") == []
        await ts_env.sleep(timedelta(hours=2))  # 2 days after the ticket started waiting
        await mail_settled(ts_client, tid)
        assert len(mails(smtp, tid, "waiting for your reply")) == 1
        await ts_env.sleep(timedelta(days=5))
        await mail_settled(ts_client, tid)
        assert len(mails(smtp, tid, "waiting for your reply")) == 1  # once per wait, not a nag
        await tickets.customer_reply(tid, "Firefox.")
        await tickets.reply(tid, "anna", "And which version?", pend=True)  # a second wait: a second reminder
        await ts_env.sleep(timedelta(hours=49))
        await mail_settled(ts_client, tid)
        assert len(mails(smtp, tid, "waiting for your reply")) == 2
        await tickets.resolve(tid, "anna")


async def test_one_survey_reminder_when_unanswered_and_none_after_an_answer(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        quiet = (await tickets.open(ticket())).ticket_id
        answered = (await tickets.open(ticket())).ticket_id
        for tid in (quiet, answered):
            await tickets.wait_for(tid, Status.OPEN)
            await tickets.reply(tid, "anna", "Fixed.")
            await tickets.resolve(tid, "anna")
        await ts_env.sleep(timedelta(minutes=61))
        await mail_settled(ts_client, quiet)
        assert len(mails(smtp, quiet, "How did we do")) == 1
        await tickets.rate(answered, 4)
        await ts_env.sleep(timedelta(days=3, minutes=1))
        await mail_settled(ts_client, quiet)
        assert len(mails(smtp, quiet, "tell us how we did")) == 1
        await mail_settled(ts_client, answered)
        assert mails(smtp, answered, "tell us how we did") == []
        await ts_env.sleep(timedelta(days=4))
        await mail_settled(ts_client, quiet)
        assert len(mails(smtp, quiet, "tell us how we did")) == 1
        assert (await tickets.final_state(quiet)).status == Status.CLOSED


async def test_reopen_within_the_window_and_a_follow_up_after_it(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    smtp: SmtpSink,
    pool: Pool,
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = (await tickets.open(ticket())).ticket_id
        await tickets.wait_for(tid, Status.OPEN)
        await tickets.reply(tid, "anna", "Fixed.")
        await tickets.resolve(tid, "anna")
        await ts_env.sleep(timedelta(minutes=61))
        await mail_settled(ts_client, tid)
        assert len(mails(smtp, tid, "How did we do")) == 1
        state = await tickets.customer_reply(tid, "It is broken again.")  # within the window: reopens
        assert state.status == Status.OPEN and state.survey_due_at is None and state.close_at is None
        assert state.sla["resolution"].fulfilled_at is None  # the resolution clock runs again
        await mail_settled(ts_client, tid)
        assert len(mails(smtp, tid, "Reopened")) == 1
        await ts_env.sleep(timedelta(days=4))
        await mail_settled(ts_client, tid)
        assert mails(smtp, tid, "tell us how we did") == []  # the pending survey's reminder went with it
        await tickets.resolve(tid, "anna")
        await ts_env.sleep(timedelta(days=8))  # the window of the second resolution ends
        assert (await tickets.final_state(tid)).status == Status.CLOSED
        with pytest.raises((InvalidTransition, TicketNotFound)):  # the test server cannot describe it as closed
            await tickets.customer_reply(tid, "And again?")
        # after the window a reply becomes a new ticket that links the old one (as the mail intake does)
        follow = await tickets.open(ticket(subject="Re: broken again", tags=[f"follow-up:{tid}"]))
        await tickets.wait_for(follow.ticket_id, Status.OPEN)
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT tags FROM tickets WHERE id = %s", (follow.ticket_id,))).fetchone()
    assert row is not None and f"follow-up:{tid}" in row["tags"]


@pytest.mark.parametrize(
    "key",
    [
        "ack:{t}",
        "csat:{t}:2",
        "csat-reminder:{t}:2",
        "pending-reminder:{t}:1795400000",
        "reopened:{t}:1",
        "reply:{t}:7",
    ],
)
def test_replies_to_every_notice_thread_back_to_the_ticket(key: str) -> None:
    """The mail intake finds the ticket from the Message-ID of whichever notice the customer answers."""
    from starter.mail_intake import _OUR_ID

    message_id = f"<{key.format(t='abcdefghijkl').replace(':', '.')}@ticketflow>"
    found = _OUR_ID.fullmatch(message_id)
    assert found and found.group(1) == "abcdefghijkl", message_id
