"""Email delivery through the outbox against a real SMTP server (aiosmtpd): a relay that is down
for a while loses nothing and sends nothing twice; a refused recipient is recorded, not retried; an address
with non-ASCII characters goes out in its ASCII form (IDNA) or over SMTPUTF8, or fails once without it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.mail import SmtpSettings
from starter.client import TicketClient
from starter.devstack import free_port
from starter.smtp_sink import SmtpSink
from tests.conftest import (
    SURVEY_LINKS,
    StartRecorder,
    WorkerFactory,
    mail_settled,
    terminate_leftovers,
    wall_clock,
)
from tests.factories import ticket
from ticketflow.config import Config, default_config
from ticketflow.models import Status
from worker import build_worker

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
# A real relay down for real seconds (the retries it provokes are the point; the dev server runs real time).
OUTAGE_SECONDS = 12  # long enough for several failed attempts with backoff; the chaos suite holds it 60 s


@pytest.fixture(scope="module")
def config() -> Config:
    return wall_clock(default_config())


async def outbox(pool: Pool, ids: list[str]) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (
            await conn.execute(
                "SELECT key, message_id, status, attempts, interrupted, last_error, smtp_code FROM outbox"
                " WHERE ticket_id = ANY(%s) ORDER BY key",
                (ids,),
            )
        ).fetchall()


@pytest.mark.e2e
async def test_a_relay_down_for_a_while_loses_nothing_and_sends_nothing_twice(
    dev_client: Client, pool: Pool, config: Config, task_queue: str
) -> None:
    relay = SmtpSink(port=free_port())  # not started: the relay is down from the first ticket on
    recorder = StartRecorder()
    client_config = dev_client.config()
    client_config["interceptors"] = [recorder]
    client = Client(**client_config)
    tickets = TicketClient(client, task_queue)
    smtp = SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5)
    try:
        async with build_worker(client, task_queue, pool, config, smtp, survey_links=SURVEY_LINKS):
            ids = [(await tickets.open(ticket(subject=f"Printer {i} jams"))).ticket_id for i in range(5)]
            for tid in ids:
                await tickets.wait_for(tid, Status.OPEN, within=30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not (rows := await outbox(pool, ids)) or min(r["attempts"] for r in rows) < 2 or len(rows) < 5:
                assert loop.time() < deadline, rows
                await asyncio.sleep(0.5)
            assert {r["status"] for r in rows} == {"pending"}  # kept, retried, not dropped
            assert all("Connect" in (r["last_error"] or "") for r in rows), rows
            # The agent is not held up by the relay: the reply returns at once, its mail follows later.
            state = await asyncio.wait_for(tickets.reply(ids[0], "anna", "Replace the fuser unit, please."), 5)
            assert state.first_response_at is not None
            await asyncio.sleep(OUTAGE_SECONDS)
            relay.start()  # the relay is back
            deadline = loop.time() + 120
            rows = await outbox(pool, ids)
            while len(rows) < 6 or {r["status"] for r in rows} != {"sent"}:  # the reply's row follows the ack
                assert loop.time() < deadline, rows
                await asyncio.sleep(0.5)
                rows = await outbox(pool, ids)
            await asyncio.sleep(3)  # a duplicate would arrive now
    finally:
        relay.stop()
        await terminate_leftovers(client, recorder.ids)
    delivered = Counter(m.message_id for m in relay.messages)
    acks = {f"<ack.{tid}@ticketflow>": 1 for tid in ids}
    assert len(rows) == 6 and sum(delivered.values()) == 6 and max(delivered.values()) == 1
    assert set(acks) <= set(delivered)
    thread = f"<ack.{ids[0]}@ticketflow>"
    first = [m for m in relay.messages if thread in (m.message_id, m.message["In-Reply-To"])]
    assert first[0].message_id == thread  # the customer reads our mails in our order
    assert len(first) == 2 and "fuser" in first[1].text()
    assert all(r["interrupted"] == 0 for r in rows)
    assert all(r["attempts"] >= 2 for r in rows if r["key"].startswith("ack:"))


async def test_a_refused_recipient_is_recorded_once_and_not_retried(
    ts_env: WorkflowEnvironment,
    ts_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    smtp: SmtpSink,
    pool: Pool,
) -> None:
    smtp.handler.refuse.add("gone@example.com")
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid = (await tickets.open(ticket(customer={"email": "gone@example.com"}))).ticket_id
        await tickets.wait_for(tid, Status.OPEN)
        state = await tickets.reply(tid, "anna", "Here is the answer.")  # the ticket goes on regardless
        assert state.first_response_at is not None
        rows = await outbox(pool, [tid])
        while len(rows) < 2 or "pending" in {r["status"] for r in rows}:  # mail goes out in the background
            await asyncio.sleep(0.2)
            rows = await outbox(pool, [tid])
    assert len(rows) == 2  # the acknowledgement and the agent's reply
    assert [(r["status"], r["attempts"], r["smtp_code"]) for r in rows] == [("failed", 1, 550)] * 2
    assert all("no such mailbox" in r["last_error"] for r in rows)
    assert not [m for m in smtp.messages if "gone@example.com" in m.rcpt_tos]


@pytest.mark.e2e
async def test_non_ascii_addresses_go_out_in_ascii_form_or_over_smtputf8_or_fail_once(
    ts_client: Client, pool: Pool, config: Config, task_queue: str, smtp: SmtpSink
) -> None:
    """The intake accepts jörg@exämple.com (RFC 6531). Sent as plain SMTP, aiosmtplib failed to encode the
    envelope and the notice was retried for ever (found by tests/test_fuzz.py)."""
    plain = SmtpSink(port=free_port(), smtputf8=False).start()
    cases = {  # name: (relay, customer address)
        "utf8": (smtp, "jörg.utf8@exämple.com"),  # no ASCII form: SMTPUTF8
        "idn": (plain, "anna.idn@exämple.com"),  # an ASCII form exists: any relay
        "plain": (plain, "jörg.plain@exämple.com"),  # no ASCII form, and a relay without SMTPUTF8
    }
    ids: dict[str, str] = {}
    try:
        for name, (relay, address) in cases.items():
            settings = SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5)
            queue = f"{task_queue}-{name}"
            async with build_worker(ts_client, queue, pool, config, settings, survey_links=SURVEY_LINKS):
                on_queue = TicketClient(ts_client, queue)
                customer = {"name": "Jörg", "email": address}
                ids[name] = (await on_queue.open(ticket(customer=customer))).ticket_id
                await on_queue.wait_for(ids[name], Status.OPEN)  # the ticket goes on, whatever its mail does
                await mail_settled(ts_client, ids[name])  # the acknowledgement goes out in the background
    finally:
        plain.stop()
        await terminate_leftovers(ts_client, [f"ticket-{i}" for i in ids.values()])

    [sent] = await outbox(pool, [ids["utf8"]])
    assert (sent["status"], sent["attempts"]) == ("sent", 1)
    [received] = [m for m in smtp.messages if m.message_id == sent["message_id"]]
    assert received.rcpt_tos == ["jörg.utf8@exämple.com"]
    assert "To: jörg.utf8@exämple.com\r\n".encode() in received.raw  # UTF-8 as such, not an encoded-word

    [idn] = await outbox(pool, [ids["idn"]])
    assert (idn["status"], idn["attempts"]) == ("sent", 1)
    [received] = [m for m in plain.messages if m.message_id == idn["message_id"]]
    assert received.rcpt_tos == ["anna.idn@xn--exmple-cua.com"]
    assert b"To: anna.idn@xn--exmple-cua.com\r\n" in received.raw

    [failed] = await outbox(pool, [ids["plain"]])
    assert (failed["status"], failed["attempts"], failed["smtp_code"]) == ("failed", 1, None)
    assert "SMTPUTF8" in failed["last_error"]
    assert [m.message_id for m in plain.messages] == [idn["message_id"]]
