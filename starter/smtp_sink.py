"""A local SMTP sink (aiosmtpd) that keeps every message it receives: as .eml files a user can
open, and in memory for tests. The embedded default's stand-in for a mail relay."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes = b""  # as it arrived, before parsing decoded its headers

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


class SinkHandler:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.messages: list[Received] = []
        self.refuse: set[str] = set()  # addresses answered "550 no such mailbox", as a real relay would
        self._lock = threading.Lock()
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw: bytes = envelope.original_content or envelope.content  # type: ignore[assignment]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        received = Received(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], msg, raw)
        with self._lock:
            self.messages.append(received)
            n = len(self.messages)
        if self.folder:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{n:05d}.eml"
            (self.folder / name).write_bytes(raw)
        return "250 Message accepted for delivery"


class SmtpSink:
    """Start with `start()`, stop with `stop()`; `messages` holds what arrived."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1025, folder: Path | None = None, *, smtputf8: bool = True
    ) -> None:
        self.handler = SinkHandler(folder)
        self.host, self.port, self.smtputf8 = host, port, smtputf8
        self._controller: Any = None

    @property
    def messages(self) -> list[Received]:
        with self.handler._lock:
            return list(self.handler.messages)

    def start(self) -> SmtpSink:
        self._controller = Controller(self.handler, hostname=self.host, port=self.port, enable_SMTPUTF8=self.smtputf8)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
