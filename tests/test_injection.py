"""Hostile text is data everywhere: SQL and Temporal list filters are parameterised or quoted, never spliced.

Classic injection strings (quotes, `'; DROP TABLE ...; --`, backslashes, dollar quotes, unicode quotes, `%s`,
`{}`) go in through every place user text reaches PostgreSQL or a visibility query: the SDK's open and every
update with text, the HTTP intake, the mail intake, a CSV import, a payload the intake quarantines, the
department report (function and CLI) and the `ticketflow list` query builder. Each value must come back from
PostgreSQL byte for byte, every table must still be there with the rows expected, and no query may match
more than it should.

SQL built from strings, as reviewed: `_audit`'s `UPDATE tickets SET <columns>` (column names from the
`_UPDATABLE` whitelist or code, values as parameters), two `... + " FOR UPDATE"` suffixes (constants),
`CREATE DATABASE` in starter/devstack.py (`sql.Identifier`), and `('1 ' || bucket)::interval` in
department_report() after `bucket` was checked against day/week/month; there is no dynamic `EXECUTE`.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities import quarantine
from starter.client import TicketClient, TicketValidationError, visibility_query
from starter.devstack import TemporalDevServer
from starter.http_intake import create_app
from starter.importer import ColumnMapping, import_csv
from starter.mail_intake import MailIntake
from starter.reports import department_report
from tests.conftest import ROOT, StartRecorder, WorkerFactory, terminate_leftovers
from ticketflow import contract, search
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import Status, TicketWorkflowInput

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

HOSTILE = (
    "'; DROP TABLE tickets; --",
    "' OR '1'='1",
    "\\x27; \\'; \\\\' \\",
    "$$; DROP TABLE messages; $$ $fn$ $body$",
    "‘curly’ “double” ＇fullwidth＇ ʼmodifierʼ",
    "%s %(body)s %% %d %",
    "{} {0} {body} {{x}}",
    '"; DELETE FROM audit_log WHERE "1"="1',
    "Robert'); DROP TABLE csat_ratings;--",
    "E'\\x27' || chr(39) || U&'\\0027'",
    "*/ /* -- # ;",
)
ONE_LINE = " ¦ ".join(HOSTILE)  # subjects, reasons, resolution notes
BODY = "\n".join(HOSTILE) + "\nand a backslash at the end \\"
NAME = " ".join(HOSTILE)[:200].strip()
EMAIL = "o'brien+%s{}$$=x@example.org"  # every one of these is allowed in an address's local part
TABLES = (
    "tickets",
    "messages",
    "audit_log",
    "queue_cursors",
    "routing_decisions",
    "outbox",
    "csat_ratings",
    "sla_events",
    "quarantine",
    "schema_migrations",
)


def hostile_ticket(channel: str, tag: str) -> dict[str, Any]:
    return {
        "subject": ONE_LINE,
        "body": BODY,
        "customer": {"name": NAME, "email": EMAIL, "plan": "x'; DROP TABLE tickets; --", "type": "regular"},
        "channel": channel,
        "external_message_id": f"<'; DROP TABLE tickets; --.{tag}.{uuid.uuid4().hex}@evil' OR '1'='1>",
        "attachments": [
            {"filename": "x'); DROP TABLE tickets;--.pdf", "content_type": "application/pdf", "size_bytes": 7}
        ],
        "tags": ["'; DROP TABLE tickets; --", "$$", "%s{}"],
    }


async def counts(pool: Pool) -> dict[str, int]:
    out = {}
    async with pool.connection() as conn:
        for table in TABLES:
            assert (await (await conn.execute("SELECT to_regclass(%s) AS t", (table,))).fetchone())["t"], table  # type: ignore[index]
            row = await (await conn.execute(f"SELECT count(*) AS n FROM {table}")).fetchone()  # names from TABLES
            assert row is not None
            out[table] = row["n"]
    return out


async def fetch(pool: Pool, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def ticket_row(pool: Pool, ticket_id: str) -> dict[str, Any]:
    rows = await fetch(pool, "SELECT * FROM tickets WHERE id = %s", ticket_id)
    assert len(rows) == 1, ticket_id
    return rows[0]


def assert_stored_ticket(row: dict[str, Any], sent: dict[str, Any]) -> None:
    assert row["subject"] == sent["subject"]
    assert row["body"] == sent["body"]
    assert row["customer_name"] == sent["customer"]["name"]
    assert row["customer_email"] == sent["customer"]["email"]
    assert row["external_message_id"] == sent["external_message_id"]
    for key in ("plan", "phone"):
        if key in sent["customer"]:
            assert row[f"customer_{key}"] == sent["customer"][key]
    if "attachments" in sent:
        assert row["attachments"] == [{**a, "url": None} for a in sent["attachments"]]
    assert set(sent.get("tags", [])) <= set(row["tags"])


# --- every entry point, round trip into PostgreSQL ---------------------------------------------------------


async def test_hostile_text_round_trips_through_every_entry_point(
    dev_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool, tmp_path: Path
) -> None:
    recorder = StartRecorder()
    config = dev_client.config()
    config["interceptors"] = [recorder]
    client = Client(**config)
    tickets = TicketClient(client, task_queue)
    before = await counts(pool)
    try:
        async with make_worker(client, task_queue):
            # the SDK, and every update that carries text
            sdk_sent = hostile_ticket("api", "sdk")
            sdk = (await tickets.open(sdk_sent)).ticket_id
            state = await tickets.wait_for(sdk, Status.OPEN)
            agent = state.assignee or "james"
            reply_ext = "<'; DROP TABLE messages; --@x' OR '1'='1>"
            await tickets.reply(sdk, HOSTILE[8], BODY + " (reply)")
            await tickets.note(sdk, HOSTILE[1], BODY + " (note)")
            await tickets.customer_reply(sdk, BODY + " (customer)", external_message_id=reply_ext)
            await tickets.escalate(sdk, HOSTILE[0], ONE_LINE)
            with pytest.raises(TicketValidationError, match="department"):
                await tickets.transfer(sdk, HOSTILE[0], "x' OR '1'='1")
            with pytest.raises(TicketValidationError, match="agent"):
                await tickets.assign(sdk, HOSTILE[0], "x'; --")
            await tickets.resolve(sdk, agent, ONE_LINE)
            rated = await tickets.rate(sdk, 1, comment=BODY, reason=HOSTILE[0])
            assert rated.ratings[-1].reason == HOSTILE[0] and rated.department is not None

            # the HTTP intake: a ticket, a reply, and hostile ticket ids in the path
            app = create_app(tickets)
            http_sent = hostile_ticket("web_form", "http")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http:
                created = await http.post("/tickets", json=http_sent)
                assert created.status_code == 201, created.text
                web = created.json()["ticket_id"]
                await tickets.wait_for(web, Status.OPEN)
                answer = await http.post(
                    f"/tickets/{web}/replies", json={"body": BODY + " (web)", "external_message_id": reply_ext}
                )
                assert answer.status_code == 200, answer.text
                for bad in ("x' OR '1'='1", "'; DROP TABLE tickets; --", "%s", "{}", "$$"):
                    assert (await http.get(f"/tickets/{bad}")).status_code == 404
                    refused = await http.post(f"/tickets/{bad}/replies", json={"body": "hi"})
                    assert refused.status_code == 404, refused.text

            # the mail intake
            mail_name = "O'Brien'); DROP TABLE tickets;-- \"quoted\" \\ %s {} $$"
            msg = EmailMessage()
            msg["From"] = formataddr((mail_name, EMAIL))
            msg["To"], msg["Subject"] = "support@northwind.example", ONE_LINE
            msg["Message-ID"] = f"<'; DROP TABLE tickets; --.{uuid.uuid4().hex}@evil>"
            msg.set_content(BODY)
            mailed = await MailIntake(tickets).ingest(msg)
            assert mailed.kind == "opened"
            await tickets.wait_for(mailed.ticket_id, Status.OPEN)

            # a CSV import (the importer strips cells, so nothing hostile sits at their edges)
            source_id = "7'; DROP TABLE tickets; --"
            export = tmp_path / "export.csv"
            with export.open("w", newline="", encoding="utf-8") as fh:
                out = csv.writer(fh)
                out.writerow(["Ticket ID", "Customer Name", "Customer Email", "Ticket Subject", "Ticket Description"])
                out.writerow([source_id, NAME, EMAIL, ONE_LINE, BODY])
                out.writerow(["8", "x", "x@example.org", "y", "z"])
            mapping = ColumnMapping(source="inj'--", tag_columns=["Ticket ID"], channels={"": "api"})
            report = await import_csv(tickets, export, mapping)
            assert (report.opened, report.rejected) == (2, []), report
            imported = ticket_id_for(f"import:inj'--:{source_id}")
            await tickets.wait_for(imported, Status.OPEN)

            # a payload started around the SDK that the intake refuses: quarantined as it came
            raw = {**hostile_ticket("chat", "raw"), "customer": {"name": NAME, "email": "'; DROP TABLE tickets; --"}}
            refused_wid = workflow_id(ticket_id_for(None))
            handle = await client.start_workflow(
                contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=raw), id=refused_wid, task_queue=task_queue
            )
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), 30)  # a statement that broke on the text would retry forever
    finally:
        await terminate_leftovers(client, recorder.ids)

    # byte for byte in PostgreSQL
    assert_stored_ticket(await ticket_row(pool, sdk), sdk_sent)
    assert_stored_ticket(await ticket_row(pool, web), {**http_sent, "channel": "web_form"})
    by_mail = await ticket_row(pool, mailed.ticket_id)
    assert_stored_ticket(
        by_mail,
        {
            "subject": ONE_LINE,
            "body": BODY,
            "customer": {"name": mail_name, "email": EMAIL},
            "external_message_id": msg["Message-ID"],
        },
    )
    by_import = await ticket_row(pool, imported)
    assert_stored_ticket(
        by_import,
        {
            "subject": ONE_LINE,
            "body": BODY,
            "customer": {"name": NAME, "email": EMAIL},
            "external_message_id": f"import:inj'--:{source_id}",
            "tags": ["imported:inj'--", f"ticket-id:{source_id}"],
        },
    )

    messages = await fetch(
        pool,
        "SELECT author_kind, author, body, external_message_id FROM messages WHERE ticket_id = %s ORDER BY seq",
        sdk,
    )
    assert [(m["author_kind"], m["author"], m["body"], m["external_message_id"]) for m in messages] == [
        ("customer", "customer", BODY, sdk_sent["external_message_id"]),
        ("agent", HOSTILE[8], BODY + " (reply)", None),
        ("note", HOSTILE[1], BODY + " (note)", None),
        ("customer", "customer", BODY + " (customer)", reply_ext),
    ]
    web_messages = await fetch(
        pool, "SELECT body, external_message_id FROM messages WHERE ticket_id = %s ORDER BY seq", web
    )
    assert [(m["body"], m["external_message_id"]) for m in web_messages][1:] == [(BODY + " (web)", reply_ext)]

    details = {
        r["event"]: r["detail"]
        for r in await fetch(pool, "SELECT event, detail FROM audit_log WHERE ticket_id = %s ORDER BY seq", sdk)
    }
    assert details["escalated"]["reason"] == f"{HOSTILE[0]}: {ONE_LINE}"
    assert details["resolved"]["resolution"] == ONE_LINE
    assert details["rated"]["comment"] == BODY and details["rated"]["reason"] == HOSTILE[0]
    (rating,) = await fetch(pool, "SELECT comment, reason FROM csat_ratings WHERE ticket_id = %s", sdk)
    assert rating == {"comment": BODY, "reason": HOSTILE[0]}

    held = await fetch(pool, "SELECT id, payload, error FROM quarantine WHERE ref LIKE %s", f"{refused_wid}/%")
    assert len(held) == 1 and json.loads(held[0]["payload"]) == raw
    assert held[0]["error"].startswith("invalid ticket: customer.email:")
    async with pool.connection() as conn:  # what `ticketflow quarantine discard` writes
        await quarantine.discarded(conn, held[0]["id"], HOSTILE[1], BODY)
        entry = await quarantine.get(conn, held[0]["id"])
    assert entry is not None and (entry.status, entry.resolved_by, entry.note) == ("discarded", HOSTILE[1], BODY)

    # every table is still there, and holds what was added to it and nothing less
    after = await counts(pool)
    assert after["tickets"] == before["tickets"] + 5  # sdk, http, mail, two imported rows
    assert after["quarantine"] == before["quarantine"] + 1
    assert after["csat_ratings"] == before["csat_ratings"] + 1
    assert after["messages"] == before["messages"] + 5 + 4  # one per ticket, then three on sdk and one on web
    assert all(after[t] >= before[t] for t in TABLES), (before, after)


# --- the department report: function and CLI ------------------------------------------------------------

REPORT_FROM = datetime(2019, 5, 6, tzinfo=UTC)  # a week no other test reports on
REPORT_TO = REPORT_FROM + timedelta(days=7)


async def test_report_parameters_are_data(pool: Pool) -> None:
    """Departments and the time zone reach department_report() as parameters, and a department whose name
    is an injection string is a department like any other."""
    tag = uuid.uuid4().hex[:8]
    plain, hostile = f"inj_{tag}", f"inj_{tag}' OR '1'='1"
    rows = [(f"inj-{tag}-{n}", dept) for n, dept in enumerate((plain, hostile, hostile))]
    async with pool.connection() as conn, conn.transaction():
        for tid, dept in rows:
            await conn.execute(
                "INSERT INTO tickets (id, channel, subject, body, customer_name, customer_email, customer_type,"
                " status, department, priority, created_at, closed_at) VALUES"
                " (%s, 'api', 's', 'b', 'n', 'e@example.org', 'regular', 'closed', %s, 'normal', %s, %s)",
                (tid, dept, REPORT_FROM + timedelta(hours=10), REPORT_FROM + timedelta(hours=11)),
            )
    before = await counts(pool)
    try:

        async def created(departments: list[str] | None, tz: str = "UTC") -> dict[str, int]:
            found: dict[str, int] = {}
            for r in await department_report(pool, departments, "week", REPORT_FROM, REPORT_TO, tz):
                found[r.department] = found.get(r.department, 0) + r.created
            return found

        assert await created([plain]) == {plain: 1}
        assert await created([hostile]) == {hostile: 2}  # matched as the value it is
        assert await created([plain, hostile, *HOSTILE]) == {plain: 1, hostile: 2, **dict.fromkeys(HOSTILE, 0)}
        assert await created([f"{plain}' OR department <> '", f"{plain}\\", f"{plain}%", "*"]) == {
            f"{plain}' OR department <> '": 0,
            f"{plain}\\": 0,
            f"{plain}%": 0,
            "*": 0,
        }
        everyone = await created(None)
        assert everyone[plain] == 1 and everyone[hostile] == 2

        for zone in ("UTC'; DROP TABLE tickets; --", "Europe/Berlin$$", "%s", "'"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"time zone .* not recognized"):
                await created([plain], zone)
        # PostgreSQL reads this one leniently as a POSIX zone ("UTC" and an offset): a zone, not SQL
        assert await created([plain], "UTC' OR '1'='1") == {plain: 1}
        with pytest.raises(ValueError, match="by must be one of"):
            await department_report(pool, [plain], "day'; DROP TABLE tickets; --", REPORT_FROM, REPORT_TO, "UTC")
        for bucket in ("day'; DROP TABLE tickets; --", "day' || 'x", "1 day"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="bucket must be day, week or month"):
                await fetch(
                    pool,
                    "SELECT * FROM department_report(%s::text[], %s, %s, %s, %s)",
                    [plain],
                    bucket,
                    REPORT_FROM,
                    REPORT_TO,
                    "UTC",
                )
        assert await counts(pool) == before
    finally:
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM tickets WHERE id = ANY(%s)", ([tid for tid, _ in rows],))


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ticketflow ARGS` as a user runs it, on the default policy and as the operator."""
    base = {k: v for k, v in os.environ.items() if k not in ("TICKETFLOW_CONFIG_FILE", "TICKETFLOW_AS")}
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", *args],
        env={**base, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_report_cli_refuses_hostile_departments_zones_and_viewers(pool: Pool, migrated: str) -> None:
    before = await counts(pool)
    env = {"DATABASE_URL": migrated}
    cases = [
        (["-d", "billing' OR '1'='1"], "unknown department \"billing' OR '1'='1\""),
        (["-d", "billing", "--tz", "UTC'; DROP TABLE tickets; --"], "unknown time zone"),
        (["--as", "x' OR '1'='1"], "--as:"),
    ]
    results = await asyncio.gather(*(asyncio.to_thread(run_cli, "report", *args, **env) for args, _ in cases))
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    ok = await asyncio.to_thread(run_cli, "report", "-d", "billing", "--tz", "UTC", "--csv", **env)
    assert ok.returncode == 0 and ok.stdout.startswith("department,period_start,"), ok.stderr
    assert await counts(pool) == before


# --- visibility: `ticketflow list` filters ---------------------------------------------------------------

LIST_INJECTIONS = (
    "x' OR WorkflowType != 'y",
    "x\\' OR WorkflowType != \\'y",
    "x\\\\' OR WorkflowType != 'y",
    "x\\",
    "' OR '1'='1",
    "x' OR 'a' = 'a",
    'x" OR WorkflowType != "y',
    "x') OR ('1'='1",
    "x'\nOR WorkflowType != 'y",
    "x' OR Department != 'x",
    "%",
    "*",
)


async def test_list_filters_quote_every_value(dev_client: Client, dev_server: TemporalDevServer) -> None:
    """A department value cannot widen a visibility query: tickets of two departments (one with quotes in its
    name) on a queue no worker polls, then filters that would match everything if they were spliced."""
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    plain = f"inj_{uuid.uuid4().hex[:8]}"
    quoted = f"o'brien ‘{plain}’ ＇x＇"
    wids: dict[str, str] = {}
    for dept in (plain, quoted):
        wid = workflow_id(ticket_id_for(None))
        await dev_client.start_workflow(
            contract.WORKFLOW_TYPE,
            TicketWorkflowInput(ticket={}),
            id=wid,
            task_queue=queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(search.DEPARTMENT, dept)]),
        )
        wids[dept] = wid
    tickets = TicketClient(dev_client, queue)
    try:

        async def ids(**filters: Any) -> set[str]:
            return {workflow_id(s.ticket_id) for s in await tickets.list(limit=1000, **filters)}

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:  # visibility is eventually consistent
            if await ids(department=plain) and await ids(department=quoted):
                break
            await asyncio.sleep(0.1)
        assert await ids(department=plain) == {wids[plain]}, visibility_query(department=plain)
        # a quote in a value is matched as a quote
        assert await ids(department=quoted) == {wids[quoted]}, visibility_query(department=quoted)
        everything = await ids()
        assert set(wids.values()) <= everything, everything

        widened = {}
        for value in (*LIST_INJECTIONS, f"{plain}' OR Department = '{quoted}", *HOSTILE):
            found = await ids(department=value)
            scoped = await ids(departments=[value, plain])
            if found or scoped != {wids[plain]}:
                widened[value] = (visibility_query(department=value), found, scoped)
        assert not widened, widened

        listed = await asyncio.to_thread(
            run_cli,
            "list",
            "--department",
            LIST_INJECTIONS[0],
            "--json",
            TICKETFLOW_TEMPORAL_ADDRESS=dev_server.address,
            TICKETFLOW_TASK_QUEUE=queue,
        )
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == [], listed.stdout
    finally:
        await terminate_leftovers(dev_client, list(wids.values()))
