"""Email: jinja2 templates (text + autoescaped HTML) and SMTP delivery with aiosmtplib."""

from __future__ import annotations

import copy
import email.policy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import idna
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


# Customers get mail in their language; staff notices are in English (the working language of the desk).
CUSTOMER_TEMPLATES = (
    "acknowledgement",
    "out_of_hours",
    "agent_reply",
    "pending_reminder",
    "resolved",
    "survey",
    "survey_reminder",
    "reopened",
)
STAFF_TEMPLATES = ("escalation", "sla_reminder", "sla_breach", "page")
LANGUAGES = ("en", "de", "es", "fr", "pt", "el", "ru", "ro")
FALLBACK = "en"


class Templates:
    """Templates per language under `<lang>/<event>.{subject,txt,html}`, English as the fallback.

    Customer text is only ever passed as data, never compiled, so it cannot run as a template; HTML is
    autoescaped; a subject is collapsed to one line so nothing can inject a header."""

    def __init__(self, root: Path | None = None) -> None:
        loader: BaseLoader = FileSystemLoader(root) if root else PackageLoader("activities", "templates")
        self.env = Environment(
            loader=loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
        )
        self.env.filters["duration"] = _duration
        self.text_env = self.env.overlay(autoescape=False)
        self._available = set(self.env.list_templates())

    def names(self) -> list[str]:
        return sorted(
            {
                n.split("/", 1)[1].rsplit(".", 1)[0]
                for n in self._available
                if n.startswith(f"{FALLBACK}/") and n.endswith(".subject")
            }
        )

    def languages(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self._available if "/" in n and n.endswith(".subject")})

    def has(self, name: str, lang: str) -> bool:
        return f"{lang}/{name}.subject" in self._available

    def language_for(self, name: str, lang: str | None) -> str:
        """The language a mail goes out in: the customer's when we have it, else English (logged)."""
        if name in STAFF_TEMPLATES or not lang or lang == FALLBACK:
            return FALLBACK
        if self.has(name, lang):
            return lang
        log.warning("no %r template in language %r: sending it in English", name, lang)
        return FALLBACK

    def render(self, name: str, context: dict[str, Any], lang: str = FALLBACK) -> RenderedMail:
        if not self.has(name, lang):
            raise TemplateNotFound(f"{lang}/{name}.subject")
        ctx = {**context, "lang": lang, "lang_dir": lang}
        subject = self.text_env.get_template(f"{lang}/{name}.subject").render(ctx)
        subject = " ".join(subject.split())  # one line: no header injection through customer text
        ctx["subject"] = subject
        return RenderedMail(
            subject=subject,
            text=self.text_env.get_template(f"{lang}/{name}.txt").render(ctx).strip() + "\n",
            html=self.env.get_template(f"{lang}/{name}.html").render(ctx),
        )


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 20.0


def ascii_domain(address: str) -> str:
    """The address with an internationalised domain in its ASCII form (IDNA), when the local part is ASCII:
    anna@exämple.com travels as anna@xn--exmple-cua.com through any relay."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or not local.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError:
        return address  # left to SMTPUTF8


def needs_smtputf8(*addresses: str) -> bool:
    """An address whose local part is not ASCII (jörg@example.com, valid since RFC 6531) travels only over
    SMTPUTF8: its header cannot be RFC 2047-encoded, and no ASCII form of it exists."""
    return not all(a.isascii() for a in addresses)


def build_message(
    *, sender: str, recipient: str, mail: RenderedMail, message_id: str, in_reply_to: str | None = None
) -> EmailMessage:
    # Fold headers only past RFC 5322's hard limit: subjects that carry a ticket reference stay on one line.
    sender, recipient = ascii_domain(sender), ascii_domain(recipient)
    policy = email.policy.SMTPUTF8 if needs_smtputf8(sender, recipient) else email.policy.SMTP
    msg = EmailMessage(policy=policy.clone(max_line_length=998))
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = mail.subject
    msg["Message-ID"] = message_id
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


REDACTED = "(address)"
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


def without_addresses(err: aiosmtplib.SMTPException, addresses: Sequence[str] = ()) -> aiosmtplib.SMTPException:
    """The same error with every address in its text replaced: codes and the relay's words stay."""

    def scrub(text: str) -> str:
        for address in sorted(filter(None, addresses), key=len, reverse=True):
            text = re.sub(re.escape(address), REDACTED, text, flags=re.IGNORECASE)
        return _ADDRESS.sub(REDACTED, text)

    clean = copy.copy(err)
    if isinstance(clean, aiosmtplib.SMTPRecipientsRefused):
        refused = [without_addresses(r, addresses) for r in clean.recipients]
        clean.recipients = [r for r in refused if isinstance(r, aiosmtplib.SMTPRecipientRefused)]
        clean.args = (clean.recipients,)
        return clean
    clean.message = scrub(clean.message)
    if isinstance(clean, aiosmtplib.SMTPRecipientRefused):
        clean.recipient = REDACTED
    clean.args = tuple(scrub(a) if isinstance(a, str) else a for a in clean.args)
    return clean


class Relay(aiosmtplib.SMTP):
    """An SMTP client whose errors never quote an address. A relay's refusal names the recipient (`450 4.2.0
    <jane@example.org>: Recipient address rejected: Greylisted`), and the SDK logs a failed notify activity
    with its error at every retry: personal data in the worker's log. Reply codes and the relay's words stay
    (is_permanent, smtp_code, outbox.last_error, whose row names the recipient anyway)."""

    async def sendmail(
        self, sender: str, recipients: str | Sequence[str], message: str | bytes, /, **options: Any
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        sender = ascii_domain(sender)
        recipients = [ascii_domain(r) for r in ([recipients] if isinstance(recipients, str) else recipients)]
        mail_options = list(options.pop("mail_options", None) or [])
        # aiosmtplib encodes the envelope as ASCII unless asked for SMTPUTF8: without it, failure for ever
        if needs_smtputf8(sender, *recipients) and "smtputf8" not in {o.lower() for o in mail_options}:
            mail_options.append("SMTPUTF8")
        try:
            return await super().sendmail(sender, recipients, message, mail_options=mail_options, **options)
        except aiosmtplib.SMTPException as err:
            raise without_addresses(err, [recipients] if isinstance(recipients, str) else recipients) from None


async def connect(settings: SmtpSettings) -> aiosmtplib.SMTP:
    smtp = Relay(
        hostname=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password,
        start_tls=settings.starttls,
        timeout=settings.timeout,
    )
    await smtp.connect()
    return smtp


async def close(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except aiosmtplib.SMTPException:
        smtp.close()


def is_permanent(err: Exception) -> bool:
    """5xx replies (unknown mailbox, rejected sender) will not succeed on retry, nor will a relay without an
    extension the message needs (SMTPUTF8 for a non-ASCII address)."""
    if isinstance(err, aiosmtplib.SMTPNotSupported):
        return True
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in err.recipients)
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return 500 <= err.code < 600
    return False


def smtp_code(err: Exception) -> int | None:
    """The relay's reply code for a refused message (the first refused recipient's)."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused) and err.recipients:
        return err.recipients[0].code
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return err.code
    return None
