"""The email channel: an SMTP server (aiosmtpd) that turns mail into tickets and replies.

A message that answers one of ours (In-Reply-To/References carry our Message-IDs) or names a ticket in
its subject (`[#abcdefghijkl]`) is added to that ticket with the quoted history stripped; anything else
opens a ticket whose id derives from the Message-ID, so a message delivered twice is one ticket. The
server answers 250 only once the ticket or reply is durable in Temporal; a transient failure answers 451,
so the sending server retries and nothing is lost; a message that can never become a ticket gets a 550.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import uuid
from dataclasses import dataclass
from email.message import EmailMessage, Message, MIMEPart
from email.parser import HeaderParser
from email.utils import getaddresses
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from activities import metrics
from starter.client import DuplicateMessage, InvalidTransition, TicketClient, TicketNotFound, TicketValidationError
from ticketflow.ids import parse_ticket_id

log = logging.getLogger("ticketflow.mail_intake")
# aiosmtpd logs every SMTP command at INFO ("sender: <address>", "recip: <address>", ">> b'MAIL FROM:<...>'") and
# every line of every message at DEBUG, under "mail.log": customer addresses, subjects and bodies. Personal data
# stays out of the logs, so the intake keeps that logger at WARNING (protocol abuse and session errors still show).
SMTP_PROTOCOL_LOG = logging.getLogger("mail.log")


def quiet_smtp_protocol_log() -> None:
    """Keep aiosmtpd's per-command and per-line logging (customer data) out of this process's logs."""
    if SMTP_PROTOCOL_LOG.getEffectiveLevel() < logging.WARNING:
        SMTP_PROTOCOL_LOG.setLevel(logging.WARNING)


OUTCOMES = (
    *("opened", "duplicate", "reply", "duplicate_reply", "follow_up", "bounce", "late_bounce", "foreign_bounce"),
    *("no_sender", "invalid", "unavailable"),
)


def _count(outcome: str) -> None:
    metrics.inc(metrics.INTAKE_REQUESTS, entry="mail", outcome=outcome)


# Our Message-IDs: <ack.TICKET@ticketflow>, <agent_reply.TICKET.7.customer@ticketflow>, ...
_OUR_ID = re.compile(r"<[a-z_-]+\.([a-z2-7]{12})(?:\.[^>@]*)?@ticketflow>")
_SUBJECT_REF = re.compile(r"\[#([a-z2-7]{12})\]")
_QUOTE_HEADERS = re.compile(
    r"^(On .+ wrote:|Am .+ schrieb .+:|Le .+ a écrit ?:|El .+ escribió:|Em .+ escreveu:|"
    r"-----\s*Original Message\s*-----|From: .+)\s*$",
    re.IGNORECASE,
)
MAX_BODY = 200_000
_CONTENT_TYPE = re.compile(r"[\w.+-]{1,127}/[\w.+-]{1,127}")


@dataclass(frozen=True)
class Ingested:
    kind: str  # opened | duplicate | reply | duplicate_reply | follow_up | bounce | late_bounce | foreign_bounce
    ticket_id: str


def strip_quoted(text: str) -> str:
    """The new part of a reply: everything above the first quote header, without '>' lines."""
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_HEADERS.match(line.strip()):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return "\n".join(kept).strip()


def _clean(text: str) -> str:
    """Text a ticket can hold: raw 8-bit header bytes (kept by the parser as lone surrogates) read as UTF-8,
    and no NUL, which PostgreSQL refuses: a mail is not refused for a stray byte."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text.replace("\x00", "")


def _decoded(part: MIMEPart) -> str:
    """A text part; a charset Python does not know ('x-unknown', 'unknown-8bit') is read as UTF-8."""
    try:
        return str(part.get_content())
    except LookupError:
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = _decoded(part)
    if part.get_content_type() == "text/html":
        content = re.sub(r"<[^>]+>", " ", re.sub(r"(?is)<(script|style).*?</\1>", " ", content))
    return content


def _attachments(msg: EmailMessage) -> list[dict[str, Any]]:
    out = []
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        content_type = part.get_content_type()
        out.append(
            {
                "filename": _clean(part.get_filename() or "").strip()[:255] or "unnamed",
                "content_type": content_type if _CONTENT_TYPE.fullmatch(content_type) else "application/octet-stream",
                "size_bytes": len(payload) if isinstance(payload, bytes) else 0,
            }
        )
    return out[:50]


def is_bounce(msg: EmailMessage) -> bool:
    """A delivery status notification (RFC 3464): a report, not a customer writing."""
    return msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"


def bounced_message(msg: EmailMessage) -> tuple[str | None, str]:
    """The Message-ID of the mail that bounced, and the relay's diagnostic."""
    original: str | None = None
    diagnostic = ""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("text/rfc822-headers", "message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            headers: Message
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]  # message/rfc822: the original message, parsed
            else:  # text/rfc822-headers: the original headers as text
                headers = HeaderParser(policy=email.policy.default).parsestr(str(part.get_content()))
            original = original or (str(headers.get("Message-ID", "")).strip() or None)
        elif kind == "message/delivery-status":
            text = "\n".join(str(p) for p in part.get_payload()) if part.is_multipart() else str(part.get_payload())
            codes = re.findall(r"(?im)^Diagnostic-Code:\s*(.+)$", text) or re.findall(r"(?im)^Status:\s*(.+)$", text)
            diagnostic = codes[0].strip()[:500] if codes else ""
    if original is None:  # no copy of the headers: the report's own threading headers name it
        found = _OUR_ID.search(" ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References")))
        original = found.group(0) if found else None
    return original, diagnostic


def thread_of(msg: EmailMessage) -> str | None:
    """The ticket a message answers, from its threading headers or its subject."""
    refs = " ".join(str(msg.get(h, "")) for h in ("In-Reply-To", "References"))
    found = _OUR_ID.search(refs) or _SUBJECT_REF.search(str(msg.get("Subject", "")))
    return parse_ticket_id(found.group(1)) if found else None


@dataclass(frozen=True)
class Reading:
    """What the intake takes from a mail, all read before Temporal is called: a mail that cannot be read is
    refused for good (550), a failure to store one that could be read is transient (451)."""

    message_id: str
    name: str
    address: str
    subject: str
    body: str
    attachments: list[dict[str, Any]]
    thread: str | None  # the ticket the mail answers
    bounce: tuple[str | None, str] | None  # a delivery report: the bounced Message-ID and the diagnostic


def read(msg: EmailMessage) -> Reading:
    """Everything the intake needs from `msg`; raises only on MIME that no retry would read better."""
    name, address = (getaddresses([str(msg.get("From", ""))]) or [("", "")])[0]  # the first of several authors
    return Reading(
        message_id=_clean(str(msg.get("Message-ID") or "")).strip() or f"<{uuid.uuid4().hex}@intake.ticketflow>",
        name=" ".join(_clean(name).split())[:200],
        address=address,
        subject=" ".join(_clean(str(msg.get("Subject", ""))).split())[:500] or "(no subject)",
        body=strip_quoted(_clean(_text(msg)))[:MAX_BODY] or "(no text)",
        attachments=_attachments(msg),
        thread=thread_of(msg),
        bounce=bounced_message(msg) if is_bounce(msg) else None,
    )


class MailIntake:
    def __init__(self, tickets: TicketClient) -> None:
        self.tickets = tickets
        for outcome in OUTCOMES:
            metrics.zero(metrics.INTAKE_REQUESTS, entry="mail", outcome=outcome)

    async def ingest(self, msg: EmailMessage) -> Ingested:
        return await self._store(read(msg))

    async def _store(self, mail: Reading) -> Ingested:
        if mail.bounce is not None:
            return await self._bounce(*mail.bounce)
        ticket_id = mail.thread
        if ticket_id is not None:
            try:
                await self.tickets.customer_reply(ticket_id, mail.body, external_message_id=mail.message_id)
                return Ingested("reply", ticket_id)
            except DuplicateMessage:
                return Ingested("duplicate_reply", ticket_id)
            except (InvalidTransition, TicketNotFound):  # closed (or long gone): a follow-up that links it
                follow_up = await self._open(mail, [f"follow-up:{ticket_id}"])
                return Ingested("follow_up", follow_up.ticket_id)
        opened = await self._open(mail, [])
        return opened

    async def _bounce(self, original: str | None, diagnostic: str) -> Ingested:
        """A delivery report about one of our mails: recorded on its ticket, never a ticket itself."""
        found = _OUR_ID.fullmatch(original or "")
        if original is None or found is None:
            # a foreign Message-ID can name its sender: not logged
            log.warning("a delivery report about a message that is not ours: dropped")
            return Ingested("foreign_bounce", "")
        ticket_id = parse_ticket_id(found.group(1))
        try:
            await self.tickets.report_bounce(ticket_id, original, diagnostic)
        except (InvalidTransition, TicketNotFound):
            log.warning("bounce of %s arrived after ticket %s closed: not recorded", original, ticket_id)
            return Ingested("late_bounce", ticket_id)
        return Ingested("bounce", ticket_id)

    async def _open(self, mail: Reading, tags: list[str]) -> Ingested:
        opened = await self.tickets.open(
            {
                "subject": mail.subject,
                "body": mail.body,
                "customer": {"name": mail.name or mail.address.split("@")[0] or "unknown", "email": mail.address},
                "channel": "email",
                "external_message_id": mail.message_id,
                "attachments": mail.attachments,
                "tags": tags,
            }
        )
        return Ingested("duplicate" if opened.duplicate else "opened", opened.ticket_id)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "replace")
        try:
            msg = email.message_from_bytes(data, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            senders = getaddresses([str(msg.get("From", ""))])  # [] without a From header
            if not senders or not senders[0][1]:
                _count("no_sender")
                return "550 5.1.7 the message has no sender address to answer"
            mail = read(msg)
        except Exception as err:  # broken MIME reads the same on every retry: refuse it for good
            log.warning("unreadable mail refused: %s", type(err).__name__)  # the message may quote the mail
            _count("invalid")
            return f"550 5.6.0 the message cannot be read ({type(err).__name__})"
        try:
            result = await self._store(mail)
        except TicketValidationError as err:
            _count("invalid")
            return f"550 5.6.0 cannot become a ticket: {' '.join(str(err).split())[:400]}"
        except Exception:  # Temporal unreachable and the like: the sending server will retry
            log.exception("mail intake failed; answered 451 so the sender retries")
            _count("unavailable")
            return "451 4.3.0 temporarily unable to accept the message, try again later"
        _count(result.kind)
        log.info("mail %s: ticket %s", result.kind, result.ticket_id or "-")  # never the sender: personal data
        return f"250 2.0.0 {result.kind} ticket {result.ticket_id}"


class MailIntakeServer:
    """Runs on the caller's event loop, next to the Temporal client it uses."""

    def __init__(self, tickets: TicketClient, host: str = "127.0.0.1", port: int = 2525) -> None:
        self.handler = MailIntake(tickets)
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> MailIntakeServer:
        quiet_smtp_protocol_log()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.handler, enable_SMTPUTF8=True, data_size_limit=25 * 1024 * 1024, hostname="ticketflow"),
            self.host,
            self.port,
        )
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
