"""No personal data in search attributes, logs, metric labels or raw histories.

Tickets carrying unique canary tokens (customer name, e-mail address, phone, subject, body, message ids,
replies, notes, the resolution note, the CSAT comment) go in through the SDK, the HTTP intake and the mail
intake, to a `ticketflow worker` process on the Temporal dev server with payload encryption on and every
log record at DEBUG. Then every place Temporal, the logs and Prometheus can see is searched for the tokens:
search attributes and memo (described and listed with a client that has no key), every log line of the
worker process and of this process (where the intakes run), the label values of the worker's business and
SDK metrics and of the intakes' counters, and the raw history bytes. A leak names the place and the line.
The unhappy paths log most, so they are taken too: the relay greylists a customer's address once (and says
the address in its answer), a ticket started around the SDK is refused by the intake, another SDK's update
with a misnamed field is refused, and the HTTP intake refuses an invalid address.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError

from starter.client import TicketClient
from starter.devstack import TemporalDevServer, free_port
from starter.http_intake import create_app
from starter.mail_intake import MailIntakeServer
from starter.smtp_sink import SinkHandler, SmtpSink
from tests.conftest import ROOT, mail_settled, terminate_leftovers
from ticketflow import contract
from ticketflow.codec import ENCODING, generate_key
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import Status, TicketWorkflowInput
from ticketflow.temporal import DATA_CONVERTER, connect

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
CODEC_KEYS = f"privacy:{generate_key()}"
# Worker log lines carry their level and logger; anything else on stderr (Temporal core) is scanned as it is.
WORKER_BOOT = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,"
    " format='%(levelname)s %(name)s: %(message)s')\n"
    "from starter.cli import app\n"
    "app(['worker'], prog_name='ticketflow')\n"
)


# --- canaries ------------------------------------------------------------------------------------------


@dataclass
class Canaries:
    """Unique tokens inside every piece of personal data; any one of them found anywhere is a leak."""

    tokens: dict[str, str] = field(default_factory=dict)  # needle (lower case) -> what it is

    def token(self, what: str) -> str:
        value = secrets.token_hex(6)
        self.tokens[value] = what
        return value

    def phone(self, what: str) -> str:
        digits = f"{secrets.randbelow(10**8):08d}"
        number = f"+44 20 {digits[:4]} {digits[4:]}"
        self.tokens[number] = what
        self.tokens[f"4420{digits}"] = f"{what} (digits only)"
        return number

    def customer(self, channel: str) -> dict[str, Any]:
        return {
            "name": f"Canary {self.token(f'{channel}: customer name')}",
            "email": f"pii.canary.{self.token(f'{channel}: customer e-mail')}@example.org",
            "phone": self.phone(f"{channel}: customer phone"),
            "type": "regular",
        }

    def ticket(self, channel: str) -> dict[str, Any]:
        return {
            "subject": f"Invoice charged twice, ref {self.token(f'{channel}: subject')}",
            "body": f"Hello, you charged my card twice (my note {self.token(f'{channel}: body')}). Please refund.",
            "customer": self.customer(channel),
            "channel": channel,
            "external_message_id": f"<msg.{self.token(f'{channel}: external message id')}@mail.example.org>",
        }

    def find(self, text: str) -> list[tuple[str, str]]:
        """(needle, what it is) of every canary in `text`."""
        low = text.lower()
        return [(needle, what) for needle, what in self.tokens.items() if needle in low]


@dataclass
class Findings:
    leaks: list[str] = field(default_factory=list)

    def scan(self, canaries: Canaries, where: str, text: str) -> None:
        for needle, what in canaries.find(text):
            line = next((ln for ln in text.splitlines() if needle in ln.lower()), text)
            self.leaks.append(f"{where}: {what} ({needle!r})\n    {line.strip()[:400]}")


class Captured(logging.Handler):
    """Every record of this process (the intakes, the SDK client, aiosmtpd), with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    handler, level = Captured(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --- the stack: a worker process with encryption and DEBUG logs, intakes in this process -----------------


class Greylisting(SinkHandler):
    """A relay that greylists chosen recipients once, answering as Postfix does: with the address."""

    def __init__(self) -> None:
        super().__init__()
        self.greylist: set[str] = set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.greylist:
            self.greylist.discard(address.lower())
            return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@dataclass
class Stack:
    client: Client  # with the key
    plain: Client  # without it: what the Temporal server and its UI hold
    task_queue: str
    metrics_url: str
    sdk_metrics_url: str
    worker_log: Path
    relay: Greylisting
    started: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    dev_server: TemporalDevServer, dev_client: Client, migrated: str, tmp_path: Path, task_queue: str
) -> AsyncIterator[Stack]:
    """A `ticketflow worker` process logging everything at DEBUG, with encryption, metrics and its own relay
    (dev_client: the dev server answers)."""
    metrics_port, sdk_port = free_port(), free_port()
    smtp = SmtpSink(port=free_port())
    smtp.handler = relay = Greylisting()
    smtp.start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": migrated,
        "TICKETFLOW_TEMPORAL_ADDRESS": dev_server.address,
        "TICKETFLOW_TASK_QUEUE": task_queue,
        "TICKETFLOW_SMTP_HOST": smtp.host,
        "TICKETFLOW_SMTP_PORT": str(smtp.port),
        "TICKETFLOW_SURVEY_SECRET": "privacy-test-survey-secret",
        "TICKETFLOW_METRICS_PORT": str(metrics_port),
        "TICKETFLOW_SDK_METRICS_PORT": str(sdk_port),
        "TICKETFLOW_CODEC_KEYS": CODEC_KEYS,
    }
    env.pop("TICKETFLOW_CONFIG_FILE", None)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_BOOT, env=env, cwd=tmp_path, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    started: list[str] = []
    client = None
    try:
        client = await connect(dev_server.address, codec_keys=CODEC_KEYS)
        s = Stack(
            client=client,
            plain=await Client.connect(dev_server.address, data_converter=DATA_CONVERTER),
            task_queue=task_queue,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            sdk_metrics_url=f"http://127.0.0.1:{sdk_port}/metrics",
            worker_log=log_path,
            relay=relay,
            started=started,
        )
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                assert proc.returncode is None, f"the worker exited:\n{log_path.read_text('utf-8', 'replace')}"
                try:
                    if (await http.get(f"http://127.0.0.1:{metrics_port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the worker never became ready:\n{log_path.read_text('utf-8', 'replace')}")
        yield s
    finally:
        if client is not None:
            await terminate_leftovers(client, started)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 40)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        smtp.stop()


async def sent(msg: EmailMessage, server: MailIntakeServer) -> str:
    errors, reply = await aiosmtplib.send(msg, hostname=server.host, port=server.port)
    assert not errors, errors
    return reply


def label_values(exposition: str) -> list[str]:
    return [
        f"{sample.name}{{{name}={value!r}}}"
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        for name, value in sample.labels.items()
    ]


# --- the test ------------------------------------------------------------------------------------------


async def test_no_personal_data_in_search_attributes_logs_metrics_or_history(
    stack: Stack, captured: Captured, pool: Pool
) -> None:
    canaries, findings = Canaries(), Findings()
    tickets = TicketClient(stack.client, stack.task_queue)
    mail_server = await MailIntakeServer(tickets, port=free_port()).start()
    app = create_app(tickets)
    opened: dict[str, str] = {}  # channel -> ticket id
    try:
        # SDK: open, reply, note, customer reply, resolve with a note, rate with a comment; the relay greylists
        # the customer's address once, so the acknowledgement fails and is retried
        sdk_ticket = canaries.ticket("api")
        stack.relay.greylist.add(sdk_ticket["customer"]["email"])
        sdk = await tickets.open(sdk_ticket)
        opened["api"] = sdk.ticket_id
        # HTTP intake: open and a customer reply; a refused body too (its error answer must not be logged)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http:
            created = await http.post("/tickets", json=canaries.ticket("web_form"))
            assert created.status_code == 201, created.text
            opened["web_form"] = created.json()["ticket_id"]
            bad = canaries.ticket("web_form")
            bad["customer"]["email"] = f"pii.canary.{canaries.token('web_form: refused e-mail')}@@example.org"
            refused = await http.post("/tickets", json=bad)
            assert refused.status_code == 422, refused.text
        # mail intake: a new mail and a reply threaded to our acknowledgement
        first = canaries.ticket("email")
        msg = EmailMessage()
        msg["From"] = f"{first['customer']['name']} <{first['customer']['email']}>"
        msg["To"], msg["Subject"] = "support@northwind.example", first["subject"]
        msg["Message-ID"] = first["external_message_id"]
        msg.set_content(f"{first['body']}\nCall me on {first['customer']['phone']}.")
        reply = await sent(msg, mail_server)
        opened["email"] = re.search(r"opened ticket ([a-z2-7]{12})", reply).group(1)  # type: ignore[union-attr]
        stack.started += [workflow_id(t) for t in opened.values()]

        states = {ch: await tickets.wait_for(tid, Status.OPEN, within=60) for ch, tid in opened.items()}
        answer = EmailMessage()
        answer["From"], answer["To"] = msg["From"], msg["To"]
        answer["Subject"] = f"Re: {first['subject']}"
        answer["Message-ID"] = f"<re.{canaries.token('email: reply message id')}@mail.example.org>"
        answer["In-Reply-To"] = f"<ack.{opened['email']}@ticketflow>"
        answer.set_content(f"Here is the receipt {canaries.token('email: reply body')}.")
        assert "reply ticket" in await sent(answer, mail_server)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http:
            replied = await http.post(
                f"/tickets/{opened['web_form']}/replies",
                json={"body": f"Any news? {canaries.token('web_form: reply body')}"},
            )
            assert replied.status_code == 200, replied.text

        for channel, tid in opened.items():
            agent = states[channel].assignee or "james"
            await tickets.reply(tid, agent, f"Dear customer, refund on its way {canaries.token(f'{channel}: agent')}")
            await tickets.note(tid, agent, f"Customer sounds upset {canaries.token(f'{channel}: internal note')}")
        await tickets.customer_reply(
            opened["api"],
            f"Thanks! {canaries.token('api: customer reply')}",
            external_message_id=f"<cr.{canaries.token('api: reply message id')}@mail.example.org>",
        )
        for channel, tid in opened.items():
            agent = states[channel].assignee or "james"
            await tickets.resolve(tid, agent, f"refunded {canaries.token(f'{channel}: resolution note')}")
        rated = await tickets.rate(opened["api"], 2, comment=f"slow {canaries.token('api: CSAT comment')}")
        assert rated.ratings[-1].score == 2
        # plain JSON from another SDK with a misnamed field: the update is refused, its text is not logged
        with pytest.raises(WorkflowUpdateFailedError) as refused_update:
            await stack.client.get_workflow_handle(workflow_id(opened["web_form"])).execute_update(
                contract.CUSTOMER_REPLY, {"text": f"my new address is {canaries.token('web_form: misnamed field')}"}
            )
        chain: list[str] = []
        cause: BaseException | None = refused_update.value.cause
        while cause is not None:
            chain.append(str(cause))
            cause = cause.__cause__
        assert "invalid CustomerReply: body: Field required" in chain[-1], chain  # the sender learns what is wrong

        # a ticket started around the SDK whose intake refuses it: failure, quarantine, activity retry logs
        raw = canaries.ticket("chat")
        raw["customer"]["name"] = f"Canary {canaries.token('chat: refused customer name')} " * 20  # > 200
        raw["customer"]["phone"] = f"call {canaries.phone('chat: refused phone')}"
        refused_wid = workflow_id(ticket_id_for(None))
        stack.started.append(refused_wid)
        handle = await stack.client.start_workflow(
            contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=raw), id=refused_wid, task_queue=stack.task_queue
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await mail_settled(stack.client, *opened.values(), within=60)
        assert not stack.relay.greylist  # the relay did refuse the address once
        assert any(m.message_id == f"<ack.{sdk.ticket_id}@ticketflow>" for m in stack.relay.messages)
    finally:
        await mail_server.stop()

    # The canaries did reach the system of record: the scans below look for data that really flowed.
    async with pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT t.customer_email, t.customer_phone, (SELECT count(*) FROM messages m WHERE m.ticket_id = t.id)"
                " AS messages FROM tickets t WHERE t.id = ANY(%s)",
                (list(opened.values()),),
            )
        ).fetchall()
    assert len(stored) == 3 and all(r["messages"] >= 4 for r in stored), stored
    assert all(canaries.find(r["customer_email"]) for r in stored)
    assert sum(1 for r in stored if r["customer_phone"] and canaries.find(r["customer_phone"])) == 2  # not by mail

    # (a) search attributes and memo, described and listed without the key
    wids = [*(workflow_id(t) for t in opened.values()), refused_wid]
    for wid in wids:
        description = await stack.plain.get_workflow_handle(wid).describe()
        for key in description.typed_search_attributes:
            findings.scan(canaries, f"search attribute {key.key.name} of {wid}", str(key.value))
        raw_description = description.raw_description.SerializeToString().decode("latin-1")
        findings.scan(canaries, f"description of {wid} (raw)", raw_description)
        memo = await (await stack.client.get_workflow_handle(wid).describe()).memo()
        findings.scan(canaries, f"memo of {wid} (decrypted)", repr(memo))
    query = f"TaskQueue = '{stack.task_queue}'"
    listed = []
    for _ in range(100):  # visibility is eventually consistent
        listed = [wf async for wf in stack.plain.list_workflows(query)]
        if {wf.id for wf in listed} >= set(wids):
            break
        await asyncio.sleep(0.2)
    assert {wf.id for wf in listed} >= set(wids)
    for wf in listed:
        findings.scan(canaries, f"list_workflows entry {wf.id}", wf.raw_info.SerializeToString().decode("latin-1"))
        for pair in wf.typed_search_attributes:
            findings.scan(canaries, f"listed search attribute {pair.key.name} of {wf.id}", str(pair.value))

    # (b) logs: the worker process at DEBUG, and this process (intakes, SDK client, SMTP servers) at DEBUG
    worker_log = stack.worker_log.read_text("utf-8", "replace")
    assert "worker polling task queue" in worker_log and "DEBUG temporalio" in worker_log  # the capture works
    findings.scan(canaries, "worker log", worker_log)
    assert any("ticketflow.mail_intake" in line for line in captured.lines), captured.lines[-20:]
    for line in captured.lines:
        findings.scan(canaries, "log of the intake process", line)

    # (c) metrics: every label value of the worker's business metrics, its SDK metrics and the intakes'
    async with httpx.AsyncClient() as http:
        business = (await http.get(stack.metrics_url)).text
        sdk_metrics = (await http.get(stack.sdk_metrics_url)).text
    assert "ticketflow_tickets_total{category=" in business and "temporal_" in sdk_metrics
    intake = generate_latest(REGISTRY).decode("utf-8")
    assert 'entry="mail",outcome="opened"' in intake
    for name, text in (("worker /metrics", business), ("worker SDK metrics", sdk_metrics), ("intake", intake)):
        for labelled in label_values(text):
            findings.scan(canaries, f"{name} label", labelled)
        findings.scan(canaries, name, text)

    # (d) the raw histories, as the Temporal server stores them: encrypted
    for wid in wids:
        history = await stack.plain.get_workflow_handle(wid).fetch_history()
        raw_bytes = b"".join(event.SerializeToString() for event in history.events) + history.to_json().encode()
        assert ENCODING in raw_bytes, f"{wid}: payloads are not encrypted"
        findings.scan(canaries, f"raw history of {wid}", raw_bytes.decode("latin-1"))

    if findings.leaks:
        print("personal data found:\n" + "\n".join(findings.leaks))
    assert not findings.leaks, "personal data found:\n" + "\n".join(findings.leaks)


async def test_unknown_field_names_stay_out_of_labels_and_logs(stack: Stack) -> None:
    """A ticket started around the SDK with a field the model does not know, named with customer data (an
    integration that flattened its form: `{"jane.doe@example.org": "..."}`)."""
    canaries, findings = Canaries(), Findings()
    raw = canaries.ticket("chat")
    raw[f"pii.canary.{canaries.token('chat: unknown field name')}@example.org"] = "subscribed"
    wid = workflow_id(ticket_id_for(None))
    stack.started.append(wid)
    handle = await stack.client.start_workflow(
        contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=raw), id=wid, task_queue=stack.task_queue
    )
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    async with httpx.AsyncClient() as http:
        business = (await http.get(stack.metrics_url)).text
    assert "ticketflow_intake_rejected_total" in business
    for labelled in label_values(business):
        findings.scan(canaries, "worker /metrics label", labelled)
    findings.scan(canaries, "worker log", stack.worker_log.read_text("utf-8", "replace"))
    assert not findings.leaks, "personal data found:\n" + "\n".join(findings.leaks)
