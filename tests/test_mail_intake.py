"""Real SMTP sessions (aiosmtplib) into the email intake server on the dev server: new tickets, replies
threaded by headers or subject with quoted history stripped, duplicates dropped, bad mail refused."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from starter.client import TicketClient
from starter.devstack import free_port
from starter.mail_intake import MailIntakeServer, strip_quoted, thread_of
from tests.conftest import WorkerFactory, terminate_leftovers
from ticketflow.ids import ticket_id_for
from ticketflow.models import Status

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


def mail(
    subject: str, body: str, message_id: str, sender: str = "Ana Costa <ana.costa@example.pt>", **headers: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, "support@northwind.example", subject, message_id
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    return msg


@pytest_asyncio.fixture(loop_scope="session")
async def intake(dev_client: Client, task_queue: str) -> AsyncIterator[tuple[MailIntakeServer, TicketClient]]:
    tickets = TicketClient(dev_client, task_queue)
    server = await MailIntakeServer(tickets, port=free_port()).start()
    yield server, tickets
    await server.stop()


async def send(server: MailIntakeServer, msg: EmailMessage) -> tuple[int, str]:
    errors, reply = await aiosmtplib.send(msg, hostname=server.host, port=server.port)
    assert not errors
    return 250, reply


async def test_mail_becomes_a_ticket_and_replies_thread_into_it(
    intake: tuple[MailIntakeServer, TicketClient],
    dev_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
) -> None:
    server, tickets = intake
    first_id = "<CAF-first-0001@mail.example.pt>"
    tid = ticket_id_for(first_id)
    async with make_worker(dev_client, task_queue):
        try:
            new = mail("Fatura cobrada duas vezes", "Olá, a fatura foi cobrada duas vezes no cartão.", first_id)
            new.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="fatura.pdf")
            _, reply = await send(server, new)
            assert f"opened ticket {tid}" in reply
            _, again = await send(server, new)  # the sending server retried: one ticket
            assert f"duplicate ticket {tid}" in again
            state = await tickets.wait_for(tid, Status.OPEN)
            assert state.department == "billing" and state.channel == "email"

            answer = mail(
                "Re: Fatura cobrada duas vezes",
                "Segue o comprovativo.\n\nEm 1 de dez., Northwind escreveu:\n> Olá",
                "<CAF-reply-0002@mail.example.pt>",
                In_Reply_To=f"<ack.{tid}@ticketflow>",
            )
            _, reply = await send(server, answer)
            assert f"reply ticket {tid}" in reply
            _, reply = await send(server, answer)
            assert f"duplicate_reply ticket {tid}" in reply
            by_subject = mail(f"Anything new? [#{tid}]", "Any news?\n\n> earlier text", "<CAF-0003@mail.example.pt>")
            _, reply = await send(server, by_subject)
            assert f"reply ticket {tid}" in reply
        finally:
            await terminate_leftovers(dev_client, [f"ticket-{tid}"])
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT author_kind, body FROM messages WHERE ticket_id = %s ORDER BY seq", (tid,))
        ).fetchall()
        ticket_row = await (await conn.execute("SELECT attachments FROM tickets WHERE id = %s", (tid,))).fetchone()
    assert [r["body"] for r in rows if r["author_kind"] == "customer"][1:] == ["Segue o comprovativo.", "Any news?"]
    assert ticket_row is not None
    assert ticket_row["attachments"] == [
        {"filename": "fatura.pdf", "content_type": "application/pdf", "size_bytes": 13, "url": None}
    ]


async def test_mail_that_cannot_become_a_ticket_is_refused(intake: tuple[MailIntakeServer, TicketClient]) -> None:
    server, _ = intake
    bad = mail("Hello", "Body", "<bad-0001@mail.example>", sender="not an address")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await aiosmtplib.send(
            bad,
            hostname=server.host,
            port=server.port,
            sender="bounce@example.com",
            recipients=["support@northwind.example"],
        )
    assert refused.value.code == 550


def test_quote_stripping_and_threading() -> None:
    assert strip_quoted("Thanks!\n\nOn Mon, 1 Dec 2026, Support wrote:\n> old\n> text") == "Thanks!"
    assert strip_quoted("Danke\nAm 1. Dez. 2026 schrieb Support <s@x>:\n> alt") == "Danke"
    assert strip_quoted("new\n> quoted\nmore") == "new\nmore"
    msg = mail("Re: hi", "x", "<a@b>", References="<x@y> <agent_reply.abcdefghijkl.7.customer@ticketflow>")
    assert thread_of(msg) == "abcdefghijkl"
    assert thread_of(mail("no ref", "x", "<a@b>")) is None
    assert thread_of(mail("Re: x", "x", "<a@b>", In_Reply_To="<ack.abcdefghijkl@ticketflow>")) == "abcdefghijkl"
    assert asyncio.iscoroutinefunction(MailIntakeServer.start)


def delivery_report(original_id: str, rcpt: str, diagnostic: str) -> EmailMessage:
    """A bounce as relays send it (RFC 3464): multipart/report with the original's headers."""
    raw = f"""From: Mail Delivery System <MAILER-DAEMON@relay.example>
To: support@northwind.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{abs(hash(original_id))}@relay.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; {diagnostic}

--b1
Content-Type: text/rfc822-headers

From: support@northwind.example
To: {rcpt}
Subject: Your ticket
Message-ID: {original_id}

--b1--
"""
    msg = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_a_bounce_is_recorded_on_its_mail_and_never_opens_a_ticket(
    intake: tuple[MailIntakeServer, TicketClient],
    dev_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
) -> None:
    server, tickets = intake
    first_id = "<CAF-bounce-0001@mail.example.pt>"
    tid = ticket_id_for(first_id)
    async with make_worker(dev_client, task_queue):
        try:
            await send(server, mail("Login broken", "I cannot log in.", first_id, sender="Zé <ze@example.pt>"))
            await tickets.wait_for(tid, Status.OPEN)
            ack = f"<ack.{tid}@ticketflow>"
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the acknowledgement went out (the relay accepted it)
                async with pool.connection() as conn:
                    sent = await (
                        await conn.execute("SELECT status FROM outbox WHERE message_id = %s", (ack,))
                    ).fetchone()
                if sent and sent["status"] == "sent":
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
            _, reply = await send(server, delivery_report(ack, "ze@example.pt", "550 5.1.1 <ze@example.pt>: unknown"))
            assert f"bounce ticket {tid}" in reply
            _, reply = await send(server, delivery_report("<CAF-other@mail.example>", "x@example.com", "550 gone"))
            assert "foreign_bounce" in reply  # not ours: dropped with a log line, and no ticket
            state = await tickets.get(tid)
            assert state.status == Status.OPEN
        finally:
            await terminate_leftovers(dev_client, [f"ticket-{tid}"])
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT status, last_error FROM outbox WHERE message_id = %s", (ack,))
        ).fetchone()
        audit = await (
            await conn.execute(
                "SELECT detail FROM audit_log WHERE ticket_id = %s AND event = 'notification_bounced'", (tid,)
            )
        ).fetchall()
        opened = await (
            await conn.execute("SELECT count(*) AS n FROM tickets WHERE customer_email LIKE 'mailer-daemon%%'")
        ).fetchone()
    assert row == {"status": "bounced", "last_error": "smtp; 550 5.1.1 <ze@example.pt>: unknown"}
    assert [a["detail"]["message_id"] for a in audit] == [ack]
    assert opened == {"n": 0}
