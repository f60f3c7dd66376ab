"""Email: jinja2 templates (text + autoescaped HTML) and SMTP delivery with aiosmtplib."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


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


class Templates:
    """Customer text is only ever passed as data, never compiled, so it cannot run as a template."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("activities", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
        )
        self.env.filters["duration"] = _duration
        self.text_env = self.env.overlay(autoescape=False)

    def names(self) -> list[str]:
        return sorted({n.rsplit(".", 1)[0] for n in self.env.list_templates() if n.endswith(".subject")})

    def render(self, name: str, context: dict[str, Any]) -> RenderedMail:
        subject = self.text_env.get_template(f"{name}.subject").render(context)
        subject = " ".join(subject.split())  # one line: no header injection through customer text
        ctx = {**context, "subject": subject}
        return RenderedMail(
            subject=subject,
            text=self.text_env.get_template(f"{name}.txt").render(ctx).strip() + "\n",
            html=self.env.get_template(f"{name}.html").render(ctx),
        )


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 20.0


def build_message(
    *, sender: str, recipient: str, mail: RenderedMail, message_id: str, in_reply_to: str | None = None
) -> EmailMessage:
    # Fold headers only past RFC 5322's hard limit: subjects that carry a ticket reference stay on one line.
    msg = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
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


async def connect(settings: SmtpSettings) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
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
    """5xx replies (unknown mailbox, rejected sender) will not succeed on retry."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in err.recipients)
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return 500 <= err.code < 600
    return False
