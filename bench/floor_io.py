"""The I/O-shaped floor's one step (bench/floor.py): a ticket's row committed to PostgreSQL and a mail handed to
the relay, as bare as they come. Not exactly once, no outbox, no audit, no categorisation or routing: the least
durable work a help desk does for every ticket, so the floor it shapes is a ceiling no pipeline can pass."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from activities import mail
from bench.floor import IO_ACTIVITY

TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_floor_tickets "
    "(key text PRIMARY KEY, body jsonb NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
SENDER, RECIPIENT = "support@bench.invalid", "customer@bench.invalid"


def acknowledgement() -> bytes:
    """One acknowledgement of the pipeline's size, built once: building mails is the pipeline's work."""
    text = (
        "Hello,\n\nwe received your request and opened ticket T-BENCH. Our support team replies within 4 business"
        " hours; answer this mail to add to the ticket.\n\nKind regards,\nSupport\n"
    )
    html = f"<html><body><p>{text.replace(chr(10), '<br>')}</p></body></html>"
    rendered = mail.RenderedMail("[T-BENCH] We received your request", text, html)
    msg = mail.build_message(
        sender=SENDER, recipient=RECIPIENT, mail=rendered, message_id="<t-bench.ack@bench.invalid>"
    )
    return msg.as_bytes()


class RowAndMail:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]], smtp_port: int) -> None:
        self.pool, self.message = pool, acknowledgement()
        self.relay = mail.SmtpSettings(host="127.0.0.1", port=smtp_port)

    async def create_table(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(TABLE)

    @activity.defn(name=IO_ACTIVITY)
    async def bench_row_and_mail(self, ticket: dict[str, Any]) -> dict[str, Any]:
        key = activity.info().workflow_id
        async with self.pool.connection() as conn:  # commits on leaving
            await conn.execute(
                "INSERT INTO bench_floor_tickets (key, body) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, Jsonb(ticket)),
            )
        smtp = await mail.connect(self.relay)  # a connection per mail, as the pipeline's delivery makes one
        try:
            await smtp.sendmail(SENDER, [RECIPIENT], self.message)
        finally:
            await mail.close(smtp)
        return ticket
