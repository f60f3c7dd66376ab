"""Property-based fuzzing (hypothesis) of every entry point: the models, the HTTP intake, the mail intake,
the survey pages, the CLI and the policy file. Each bad input gets a clear refusal, each accepted one is
kept (its workflow exists and its row is in PostgreSQL), and nothing crashes.

Hypothesis runs its examples synchronously; the async entry points are driven on pytest's session loop
from a worker thread (`on_loop`), where the Temporal client, the worker and the pool of the fixtures live.
Examples are random locally and derandomised under CI, so a CI run is reproducible.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import quopri
import re
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote, urlencode

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from starter import http_intake, survey_pages
from starter.cli import app as cli_app
from starter.client import TicketClient
from starter.devstack import free_port
from starter.mail_intake import MailIntake
from starter.smtp_sink import SmtpSink
from tests.conftest import SURVEY_SECRET, WorkerFactory, resolved_with_survey, start_time_skipping, wall_clock
from tests.factories import ticket
from ticketflow import survey
from ticketflow.calendar import add_business_seconds
from ticketflow.config import Config, default_config, load_config
from ticketflow.ids import ticket_id_for
from ticketflow.models import (
    MAX_ATTACHMENTS,
    MAX_BODY,
    MAX_SUBJECT,
    AgentReply,
    Assign,
    Attachment,
    BounceReport,
    ChangePriority,
    Customer,
    CustomerReply,
    CustomerType,
    EscalateRequest,
    InternalNote,
    PendRequest,
    Priority,
    RateRequest,
    RefreshPolicy,
    ReopenRequest,
    ResolveRequest,
    Status,
    TicketIn,
    Transfer,
)

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
T = TypeVar("T")
# Hypothesis warns when the random module's state moves while it draws an example; here the worker, on the
# loop's thread, uses it at the same time (retry jitter, assignment): no strategy does.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the .random. module inside strategies")

FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis folder in the work tree; a failure prints its example and seed
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the fixtures here hold servers and clients, not per-example state
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(scope="module")
def config() -> Config:
    """Calendar-hours policy: the survey goes out 60 minutes after resolving, whatever the weekday."""
    return wall_clock(default_config())


@pytest_asyncio.fixture(loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test: the tickets a test leaves behind are terminated, which can stop
    the Java test server from skipping time for the next test."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Runs `coro` on the test's event loop from hypothesis' thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=120)


# --- strategies shared by every entry point ----------------------------------------------------------------

ODD = [
    "\x00",
    "\ud800",  # lone surrogates: not encodable as UTF-8
    "\udfff",
    "\u202e",  # right-to-left override
    "\u200f",
    "\u200b",
    "\ufeff",
    "\u0085",
    "\u2028",
    "\x1c",
    "\x1b[31m",
    "\r\n",
    "\r",
    "\n",
    "\t",
    " ",
    "e\u0301",
    "🎫",
    "👩‍👩‍👧",
    "\U0010ffff",
    "ﷺ",
    "²",
    "٣",
]
odd_text = st.lists(st.one_of(st.sampled_from(ODD), st.text(max_size=12)), max_size=6).map("".join)
huge_text = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["x", "é", "🎫", " ", "\x00"]),
    st.sampled_from([64, 65, 200, 201, 255, 256, 998, 999, 2000, 2001, MAX_SUBJECT, MAX_SUBJECT + 1, MAX_BODY + 1]),
)
long_email = st.builds(lambda n: "a" * n + "@example.com", st.sampled_from([64, 65, 240, 300, 5000]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**40),
    st.floats(),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)
# plausible text with one odd character in it: often accepted, so what is accepted gets checked
odd_inserts = st.tuples(st.sampled_from(ODD), st.text(max_size=5)).map(lambda t: f"Hello {t[0]}{t[1]} world")
junk = st.one_of(json_values, odd_text, huge_text, long_email, odd_inserts, odd_inserts)

# Paths into a valid ticket that a mutation may hit (an index past a list's end appends there).
TICKET_PATHS: list[tuple[str | int, ...]] = [
    ("subject",),
    ("body",),
    ("customer",),
    ("customer", "name"),
    ("customer", "email"),
    ("customer", "phone"),
    ("customer", "plan"),
    ("customer", "type"),
    ("customer", "region"),
    ("customer", "language"),
    ("channel",),
    ("external_message_id",),
    ("attachments",),
    ("attachments", 0),
    ("attachments", 0, "filename"),
    ("attachments", 0, "content_type"),
    ("attachments", 0, "size_bytes"),
    ("attachments", 0, "url"),
    ("tags",),
    ("tags", 0),
    ("unknown_field",),
    ("customer", "unknown_field"),
]


def valid_ticket(external_id: str | None) -> dict[str, Any]:
    base = ticket(external_message_id=external_id)
    base["attachments"] = [{"filename": "screenshot.png", "content_type": "image/png", "size_bytes": 1024}]
    base["tags"] = ["web"]
    if external_id is None:
        del base["external_message_id"]
    return base


def mutate(data: dict[str, Any], path: tuple[str | int, ...], value: Any, delete: bool) -> None:
    """Sets (or deletes) `path` in place, creating nothing above it: a path through a junk value is skipped."""
    target: Any = data
    for key in path[:-1]:
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and isinstance(key, int) and key < len(target):
            target = target[key]
        else:
            return
    last = path[-1]
    if isinstance(target, dict) and isinstance(last, str):
        if delete:
            target.pop(last, None)
        else:
            target[last] = value
    elif isinstance(target, list) and isinstance(last, int):
        if delete and last < len(target):
            del target[last]
        elif not delete:
            target[last:] = [value, *target[last + 1 :]]


@st.composite
def mutated_tickets(draw: st.DrawFn, salt: str = "") -> dict[str, Any]:
    """A valid ticket with 0-3 fields replaced by junk, odd text or deleted."""
    n = draw(st.integers(0, 10**6))
    data = valid_ticket(draw(st.sampled_from([f"<{salt}.{n}@fuzz.example>", None])))
    for _ in range(draw(st.integers(0, 3))):
        mutate(data, draw(st.sampled_from(TICKET_PATHS)), draw(junk), draw(st.booleans()))
    return data


def text_ok(value: str) -> bool:
    """Whether `value` can be encoded as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def only_stripped(raw: str, kept: str) -> bool:
    """`kept` is `raw` without leading and trailing whitespace, nothing else cut."""
    at = raw.find(kept)
    if at < 0:
        return False
    return all(c.isspace() for c in raw[:at] + raw[at + len(kept) :])


def check_validation(model: type[BaseModel], data: Any) -> BaseModel | None:
    """The model, or None after checking that the refusal names what is wrong. Any other exception fails."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        assert errors
        for e in errors:
            assert isinstance(e["msg"], str) and e["msg"].strip(), e
            # a wrong value is named by its field; only a wrong whole (not an object, a key that is not
            # valid text) has an empty location
            if isinstance(data, dict) and all(isinstance(k, str) and text_ok(k) for k in data):
                assert e["loc"], e
        return None


def check_round_trip(data: Any, value: Any, path: tuple[str | int, ...] = ()) -> None:
    """Every accepted text field is the input less its surrounding whitespace: never truncated or altered."""
    if isinstance(data, dict) and isinstance(value, dict):
        for k, v in data.items():
            if k in value:
                check_round_trip(v, value[k], (*path, k))
    elif isinstance(data, list) and isinstance(value, list):
        assert len(data) == len(value), path
        for i, (d, v) in enumerate(zip(data, value, strict=True)):
            check_round_trip(d, v, (*path, i))
    elif isinstance(data, str) and path and path[-1] not in ("email", "rating"):
        assert isinstance(value, str) and only_stripped(data, value), (path, data[:80], str(value)[:80])


# --- 1. models ---------------------------------------------------------------------------------------------

MESSAGE_MODELS: dict[type[BaseModel], dict[str, Any]] = {
    Customer: {"name": "Ada", "email": "ada@example.com", "phone": "+49 30 1234567", "language": "de"},
    Attachment: {"filename": "a.pdf", "content_type": "application/pdf", "size_bytes": 10, "url": "https://x.example"},
    RateRequest: {"rating": 4, "comment": "ok", "reason": "other", "resolution": 1, "nonce": "n.t"},
    CustomerReply: {"body": "thanks", "external_message_id": "<m@example.com>"},
    AgentReply: {"agent": "anna", "body": "Fixed.", "pend": True},
    InternalNote: {"agent": "anna", "body": "Customer is on the old plan."},
    BounceReport: {"message_id": "<ack.abcdefghijkl@ticketflow>", "diagnostic": "550 5.1.1 no such user"},
    Assign: {"actor": "lead", "agent": "anna", "reason": "skills"},
    PendRequest: {"agent": "anna", "reason": "waiting for logs"},
    ResolveRequest: {"agent": "anna", "resolution": "restarted"},
    ReopenRequest: {"actor": "anna", "reason": "still broken"},
    ChangePriority: {"actor": "anna", "priority": "high", "reason": "outage"},
    Transfer: {"actor": "anna", "department": "billing"},
    RefreshPolicy: {"actor": "ops"},
    EscalateRequest: {"actor": "anna", "reason": "needs tier 2"},
}
ALL_MODELS: list[type[BaseModel]] = [TicketIn, *MESSAGE_MODELS]


@settings(FUZZ, max_examples=500)
@given(model=st.sampled_from(ALL_MODELS), data=json_values)
def test_models_take_any_json_or_name_the_wrong_field(model: type[BaseModel], data: Any) -> None:
    accepted = check_validation(model, data)
    if accepted is not None:
        check_round_trip(data, accepted.model_dump())


@settings(FUZZ, max_examples=500)
@example(data={**valid_ticket(None), "body": "NUL \x00 here"})
@example(data={**valid_ticket(None), "subject": "  \u202eRTL 🎫 \u200b  ", "body": "\t body \r\n"})
@given(data=mutated_tickets())
def test_mutated_tickets_are_kept_whole_or_refused_by_field(data: dict[str, Any]) -> None:
    accepted = check_validation(TicketIn, data)
    if isinstance(accepted, TicketIn):
        check_round_trip(data, accepted.model_dump())
        assert 1 <= len(accepted.subject) <= MAX_SUBJECT and 1 <= len(accepted.body) <= MAX_BODY
        assert "\n" not in accepted.subject and "\r" not in accepted.subject
        assert len(accepted.attachments) <= MAX_ATTACHMENTS
        # accepted text goes to PostgreSQL, whose text columns refuse NUL: it would never be stored
        assert "\x00" not in accepted.model_dump_json().replace("\\u0000", "\x00")


@settings(FUZZ, max_examples=300)
@example(model=RateRequest, mutations=[("", "²", False)])
@example(model=RateRequest, mutations=[("", "9" * 5_000, False)])
@example(model=CustomerReply, mutations=[("", "NUL \x00 here", False)])
@given(
    model=st.sampled_from(list(MESSAGE_MODELS)),
    mutations=st.lists(st.tuples(st.text(max_size=3) | st.sampled_from(["*"]), junk, st.booleans()), max_size=3),
)
def test_mutated_messages_are_kept_whole_or_refused_by_field(
    model: type[BaseModel], mutations: list[tuple[str, Any, bool]]
) -> None:
    data = dict(MESSAGE_MODELS[model])
    fields = list(data)
    for key, value, delete in mutations:
        name = fields[len(key) % len(fields)] if key != "*" else "unknown_field"
        if delete:
            data.pop(name, None)
        else:
            data[name] = value
    accepted = check_validation(model, data)
    if accepted is not None:
        check_round_trip(data, accepted.model_dump())
        assert "\x00" not in accepted.model_dump_json().replace("\\u0000", "\x00")
    elif model is RateRequest and "rating" in data:  # a rating is refused with the scale, not int()'s words
        with pytest.raises(ValidationError) as err:
            model.model_validate(data)
        assert all("rating must" in e["msg"] for e in err.value.errors() if e["loc"] == ("rating",)), err.value


LIMITS: list[tuple[str, tuple[str | int, ...], Any, Any]] = [
    ("subject", ("subject",), "s" * MAX_SUBJECT, "s" * (MAX_SUBJECT + 1)),
    ("body", ("body",), "b" * MAX_BODY, "b" * (MAX_BODY + 1)),
    (
        "attachments",
        ("attachments",),
        [{"filename": "f", "content_type": "a/b", "size_bytes": 1}] * MAX_ATTACHMENTS,
        [],
    ),
    ("filename", ("attachments", 0, "filename"), "f" * 255, "f" * 256),
    ("content_type", ("attachments", 0, "content_type"), "a/" + "b" * 253, "a/" + "b" * 254),
    ("size_bytes", ("attachments", 0, "size_bytes"), 100 * 1024 * 1024, 100 * 1024 * 1024 + 1),
    ("negative size_bytes", ("attachments", 0, "size_bytes"), 0, -1),
    ("url", ("attachments", 0, "url"), "u" * 2000, "u" * 2001),
    ("tags", ("tags",), ["t"] * 50, ["t"] * 51),
    ("tag", ("tags", 0), "t" * 64, "t" * 65),
    ("customer name", ("customer", "name"), "n" * 200, "n" * 201),
    ("external_message_id", ("external_message_id",), "m" * 998, "m" * 999),
    ("NUL in body", ("body",), "a\tb", "a\x00b"),
    ("NUL in filename", ("attachments", 0, "filename"), "a b", "a\x00b"),
]


@pytest.mark.parametrize(("what", "path", "largest", "over"), LIMITS, ids=[x[0] for x in LIMITS])
def test_every_ticket_field_has_an_enforced_limit(
    what: str, path: tuple[str | int, ...], largest: Any, over: Any
) -> None:
    ok = valid_ticket("<limits@fuzz.example>")
    mutate(ok, path, largest, delete=False)
    TicketIn.model_validate(ok)
    bad = valid_ticket("<limits@fuzz.example>")
    if what == "attachments":
        bad["attachments"] = [{"filename": "f", "content_type": "a/b", "size_bytes": 1}] * (MAX_ATTACHMENTS + 1)
    else:
        mutate(bad, path, over, delete=False)
    with pytest.raises(ValidationError) as err:
        TicketIn.model_validate(bad)
    (error,) = err.value.errors()
    assert error["loc"][: len(path)] == path and error["msg"], error


# --- ASGI without a transport: every header, chunk and lie exactly as drawn -------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int
    crash: str | None = None

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:300]!r}, crash={self.crash!r})"

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (),
    query: bytes = b"",
) -> Answer:
    """One request straight into the ASGI app; an exception out of the app is a crash (a 500)."""
    source: Iterator[bytes] = iter(chunks)
    pending = next(source, None)
    done = False
    read = 0
    answer = Answer(0, {}, b"", 0)

    async def receive() -> Message:
        nonlocal pending, done, read
        if done:
            return {"type": "http.disconnect"}
        chunk, pending = pending, next(source, None)
        done = pending is None
        read += chunk is not None
        return {"type": "http.request", "body": chunk or b"", "more_body": not done}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path, safe="/", errors="surrogatepass").encode("ascii"),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 40000),
        "server": ("fuzz.test", 80),
    }
    try:
        await app(scope, receive, send)
    except Exception as err:  # ServerErrorMiddleware answered 500 and re-raised
        answer.crash = f"{type(err).__name__}: {err}"[:500]
    answer.chunks_read = read
    return answer


def chunked(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


async def stored(pool: Pool, ids: Iterable[str], within: float = 40.0) -> dict[str, dict[str, Any]]:
    """The ticket rows of `ids` once the intake activity wrote them (polling, at most `within` seconds)."""
    missing, found = set(ids), {}
    deadline = time.monotonic() + within
    while missing and time.monotonic() < deadline:
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT id, subject, body, customer_name FROM tickets WHERE id = ANY(%s)", (list(missing),)
                )
            ).fetchall()
        for row in rows:
            found[row["id"]] = row
            missing.discard(row["id"])
        if missing:
            await asyncio.sleep(0.2)
    return found


async def why_not_stored(tickets: TicketClient, tid: str) -> str:
    """The failure of the ticket's pending activity, for the assertion message."""
    desc = await tickets.handle(tid).describe()
    return "; ".join(
        f"{a.activity_type.name}: {a.last_failure.message}" for a in desc.raw_description.pending_activities
    )


async def assert_kept(tickets: TicketClient, pool: Pool, accepted: dict[str, TicketIn | None]) -> None:
    """Every accepted ticket's workflow exists and its row holds exactly what was accepted."""
    for tid in accepted:
        desc = await tickets.handle(tid).describe()
        assert desc.id == f"ticket-{tid}"
    rows = await stored(pool, accepted)
    lost = {tid: await why_not_stored(tickets, tid) for tid in accepted if tid not in rows}
    assert not lost, f"accepted but never stored: {lost}"
    for tid, model in accepted.items():
        if model is not None:
            row = rows[tid]
            assert (row["subject"], row["body"], row["customer_name"]) == (
                model.subject,
                model.body,
                model.customer.name,
            )


def assert_json_error(answer: Answer) -> None:
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    for e in body.get("errors", []):
        assert isinstance(e["loc"], list) and isinstance(e["msg"], str) and e["msg"], e


# --- 2. HTTP intake ----------------------------------------------------------------------------------------

CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON",
    b"application/json;charset=latin-1",
    b"text/plain",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x",
    b"",
    b"\xff\xfe",
    None,
]
LENGTH_LIES = [b"0", b"1", b"-1", b"abc", b"\xb2", b"\xd9\xa3", b"9" * 40, b"1e3", b" 12 ", b""]
DEEP = [
    b"[" * 10_000 + b"]" * 10_000,
    b"[" * 100_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"subject": ' + b"[" * 3_000 + b"]" * 3_000 + b"}",
]
HUGE_NUMBERS = [
    b'{"subject": ' + b"9" * 5_000 + b"}",
    b"9" * 5_000,
    b'{"attachments": [{"size_bytes": 1e999999}]}',
    b'{"attachments": [{"size_bytes": -' + b"9" * 4_400 + b"}]}",
    b'{"subject": NaN, "body": Infinity}',
]


@dataclass
class HttpRequest:
    kind: str
    body: bytes
    content_type: bytes | None
    length: bytes | None  # the Content-Length header as sent (true, a lie, or none: chunked)
    chunk: int
    data: Any = None  # the JSON value sent, when the body is one

    def __repr__(self) -> str:
        body = self.body if len(self.body) < 300 else self.body[:150] + b"..." + self.body[-100:]
        return f"HttpRequest({self.kind}, {body!r} ({len(self.body)} bytes), {self.content_type!r}, {self.length!r})"

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [] if self.content_type is None else [(b"content-type", self.content_type)]
        return out + ([] if self.length is None else [(b"content-length", self.length)])


@st.composite
def http_requests(draw: st.DrawFn, salt: str) -> HttpRequest:
    kind = draw(st.sampled_from(["ticket", "ticket", "ticket", "json", "bytes", "deep", "number", "utf8", "huge"]))
    data: Any = None
    if kind == "ticket":
        data = draw(mutated_tickets(salt))
        if draw(st.booleans()):
            data.pop("channel", None)  # the intake's default channel
        body = json.dumps(data, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "json":
        data = draw(json_values)
        body = json.dumps(data).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "deep":
        body = draw(st.sampled_from(DEEP))
    elif kind == "number":
        body = draw(st.sampled_from(HUGE_NUMBERS))
    elif kind == "utf8":  # a valid ticket whose subject is not UTF-8
        body = (
            json.dumps(valid_ticket(None))
            .encode()
            .replace(b"Cannot log in", draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3"])))
        )
    else:  # over the limit, announced or not
        body = json.dumps({**valid_ticket(None), "body": "x" * (http_intake.MAX_REQUEST_BYTES + 1)}).encode()
    content_type = draw(st.sampled_from(CONTENT_TYPES)) if draw(st.integers(0, 3)) == 0 else b"application/json"
    length: bytes | None = str(len(body)).encode()
    if draw(st.integers(0, 3)) == 0:
        length = draw(st.sampled_from([None, *LENGTH_LIES]))
    chunk = draw(st.sampled_from([1 << 16, 1 << 10, 7]))
    if len(body) // chunk > 2_000:
        chunk = 1 << 16
    return HttpRequest(kind, body, content_type, length, chunk, data)


def explicit(
    kind: str, data: Any, content_type: bytes = b"application/json", length: bytes | None = b"true"
) -> HttpRequest:
    """A request hypothesis always tries, for the cases found once: a regression test each."""
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    sent = str(len(body)).encode() if length == b"true" else length
    return HttpRequest(kind, body, content_type, sent, 1 << 16, None if isinstance(data, bytes) else data)


async def test_http_intake_refuses_bad_requests_clearly_and_keeps_every_accepted_ticket(
    ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    app = http_intake.create_app(tickets)
    salt = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    accepted: dict[str, TicketIn | None] = {}
    seen: dict[int, int] = {}
    kinds: dict[str, int] = {}
    async with make_worker(ts_client, task_queue):
        live = (await tickets.open(valid_ticket(f"<{salt}.live@fuzz.example>"))).ticket_id
        await tickets.wait_for(live, Status.OPEN)

        @settings(FUZZ, max_examples=100)
        @given(req=http_requests(salt))
        @example(req=explicit("ticket", {**valid_ticket(f"<{salt}.nul@fuzz.example>"), "body": "NUL \x00 here"}))
        @example(req=explicit("ticket", valid_ticket(f"<{salt}.case@fuzz.example>"), b"Application/JSON"))
        @example(req=explicit("ticket", {**valid_ticket(f"<{salt}.pair@fuzz.example>"), "subject": "\ud800\udfff"}))
        @example(req=explicit("ticket", {**valid_ticket(None), "customer": {"name": "x", "\ud800": 1}, "\udfff": 2}))
        @example(req=explicit("deep", DEEP[0]))
        @example(req=explicit("number", HUGE_NUMBERS[0]))
        @example(req=explicit("huge", b'{"body": "' + b"x" * http_intake.MAX_REQUEST_BYTES + b'"}', length=None))
        @example(req=explicit("huge", b'{"body": "' + b"x" * http_intake.MAX_REQUEST_BYTES + b'"}', length=b"\xb2"))
        def open_tickets(req: HttpRequest) -> None:
            answer = on_loop(
                loop, call(app, "POST", "/tickets", headers=req.headers(), chunks=chunked(req.body, req.chunk))
            )
            seen[answer.status] = seen.get(answer.status, 0) + 1
            kinds[req.kind] = kinds.get(req.kind, 0) + 1
            assert answer.crash is None and answer.status in {200, 201, 400, 413, 415, 422}, (answer, req.kind)
            if answer.status >= 400:
                assert_json_error(answer)
            if (req.content_type or b"").split(b";")[0].strip().lower() == b"application/json":
                assert answer.status != 415, answer  # media types are case-insensitive (RFC 9110)
            if answer.status == 413:  # refused without reading a huge body whole
                assert answer.chunks_read * req.chunk <= http_intake.MAX_REQUEST_BYTES + 2 * req.chunk
            if req.kind == "ticket" and req.content_type == b"application/json" and answer.status not in (413, 400):
                # what the server parsed: lone surrogates escaped in JSON can join into one valid character
                sent = {"channel": "web_form", **json.loads(req.body)}
                valid = check_validation(TicketIn, sent)
                assert (answer.status in (200, 201)) == (valid is not None), (answer, sent)
            if answer.status in (200, 201):
                tid = answer.json()["ticket_id"]
                data = {"channel": "web_form", **json.loads(req.body)}
                accepted[tid] = accepted.get(tid) if answer.status == 200 else TicketIn.model_validate(data)

        @settings(FUZZ, max_examples=60)
        @given(
            tid=st.one_of(st.just(live), st.just("abcdefghijkl"), st.text(min_size=1, max_size=40)),
            data=st.one_of(st.fixed_dictionaries({"body": junk}, optional={"external_message_id": junk}), json_values),
            raw=st.one_of(st.none(), st.sampled_from(DEEP + HUGE_NUMBERS), st.binary(max_size=40)),
        )
        def replies(tid: str, data: Any, raw: bytes | None) -> None:
            assume("/" not in tid)
            body = raw if raw is not None else json.dumps(data).encode()
            headers = [(b"content-type", b"application/json")]
            answer = on_loop(loop, call(app, "POST", f"/tickets/{tid}/replies", headers=headers, chunks=[body]))
            assert answer.crash is None and answer.status in {200, 400, 404, 409, 413, 422}, answer
            if answer.status >= 400:
                assert_json_error(answer)
            status = on_loop(loop, call(app, "GET", f"/tickets/{tid}"))
            assert status.crash is None and status.status in {200, 404}, status
            if status.status == 404:
                assert_json_error(status)

        await asyncio.to_thread(open_tickets)
        await asyncio.to_thread(replies)
        print(f"HTTP intake: answers {sorted(seen.items())}, {kinds}, {len(accepted)} tickets accepted")
        assert len(accepted) <= 40, "too many tickets for a quick test: lower the odds of a valid ticket"
        await assert_kept(tickets, pool, accepted)


# --- 3. mail intake ----------------------------------------------------------------------------------------

CHARSETS = [b"utf-8", b"iso-8859-1", b"x-unknown", b"", b"utf-7", b"utf-16", b'"utf-8', b"us-ascii", b"cp1252"]
ENCODINGS = [b"7bit", b"8bit", b"base64", b"quoted-printable", b"binary", b"x-uuencode", b"x-unknown"]
HEADER_VALUES = [
    b"Ana Costa <ana.costa@example.pt>",
    b"ana@example.com",
    b"",
    b"<>",
    b"=?x-unknown?q?Ana?= <ana@example.com>",
    b"=?utf-8?b?!!!?= <ana@example.com>",
    "Zoë Ñandú <zoe@exämple.com>".encode(),
    b"ana@example.com\r\nBcc: victim@example.com",
    b"ana@example.com\nSubject: injected",
    b'"A\\"b" <a@b.example.com>',
    b"x" * 300 + b" <ana@example.com>",
    b"ana@example.com, bob@example.com",
    b"undisclosed-recipients:;",
    b"Ana\x00 <ana@example.com>",
    b"\xff\xfe <ana@example.com>",
    b"(comment <ana@example.com>",
    b"ana@@example.com",
    b"a" * 300 + b"@example.com",
]
SUBJECTS = [
    b"Cannot log in",
    b"Re: [#abcdefghijkl] still broken",
    b"Hi\r\nBcc: victim@example.com",
    b"=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
    b"=?x-unknown?b?SGk=?=",
    b"=?utf-8?b?broken",
    "Grüße 🎫 \u202e".encode(),
    b"\xff\xfe\xfd",
    b"s" * 5_000,
    b"a\r\n b\r\n\tc",
    b"\x00\x01\x02",
]


def header(name: bytes, value: bytes) -> bytes:
    return name + b": " + value


@st.composite
def leaf_part(draw: st.DrawFn) -> list[bytes]:
    """One text or attachment part: header lines, a blank line, its payload."""
    kind = draw(st.sampled_from([b"text/plain", b"text/html", b"application/octet-stream", b"text/rfc822-headers"]))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    text = draw(odd_text | st.sampled_from(["hello <b>world</b>", "<script>x</script>hi", "On Mon, X wrote:\n> old"]))
    payload = text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else draw(st.binary(max_size=200))
    if draw(st.integers(0, 9)) == 0:
        payload = payload + b"y" * 300_000  # a huge body
    if cte == b"base64":
        payload = draw(st.sampled_from([base64.encodebytes(payload), b"!!!not base64===", payload[:7]]))
    elif cte == b"quoted-printable":
        payload = draw(st.sampled_from([quopri.encodestring(payload), b"=ZZ=\r\n=", payload]))
    lines = [header(b"Content-Type", kind + (b"; charset=" + charset if charset else b""))]
    lines.append(header(b"Content-Transfer-Encoding", cte))
    if draw(st.booleans()):
        name = draw(st.sampled_from([b"report.pdf", b"\xff.pdf", b"a" * 1_000, b"x\x00y", b"..\\..\\etc"]))
        lines.append(header(b"Content-Disposition", b"attachment; filename=" + name))
    if draw(st.booleans()):
        lines.append(header(b"Content-Disposition", b"attachment; filename*=x-unknown''%FF%FE"))
    return [*lines, b"", payload]


@st.composite
def mime_entity(draw: st.DrawFn, depth: int = 2) -> list[bytes]:
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "many", "nested", "report"] if depth else ["leaf"]))
    if kind == "leaf":
        return draw(leaf_part())
    if kind == "many":  # thousands of parts
        many = b"".join(
            b"--m\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i
            for i in range(draw(st.sampled_from([1_000, 3_000])))
        )
        return [b"Content-Type: multipart/mixed; boundary=m", b"", many + b"--m--"]
    if kind == "nested":  # message/rfc822 inside message/rfc822 ...
        levels = draw(st.sampled_from([5, 200, 2_000]))
        inner = b"Content-Type: text/plain\r\n\r\ninnermost"
        for _ in range(levels):
            inner = b"Content-Type: message/rfc822\r\n\r\nSubject: again\r\n" + inner
        return [inner]
    if kind == "report":  # a delivery status notification, about one of ours or not
        original = draw(st.sampled_from([b"<ack.abcdefghijkl@ticketflow>", b"<x@y>", b"", b"\xff"]))
        status = draw(st.sampled_from([b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 no such user", b"", b"\x00"]))
        body = (
            b"--r\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
            b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n" + status + b"\r\n"
            b"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: " + original + b"\r\n--r--"
        )
        return [b"Content-Type: multipart/report; report-type=delivery-status; boundary=r", b"", body]
    boundary = draw(st.sampled_from([b"b1", b"", b"x" * 200, b'"quoted b"', b"b1--"]))
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report", b"x-unknown"]))
    parts = draw(st.lists(mime_entity(depth - 1), max_size=4))
    closing = draw(st.sampled_from([b"--b1--", b"", b"--other--", b"--b1"]))
    body = b"".join(b"--b1\r\n" + b"\r\n".join(p) + b"\r\n" for p in parts) + closing
    return [b"Content-Type: multipart/" + subtype + b"; boundary=" + boundary, b"", body]


@st.composite
def raw_mails(draw: st.DrawFn, salt: str, live: str) -> bytes:
    """A mail as a broken (or hostile) mailer might send it; `live` is a ticket its subject may answer."""
    lines = []
    senders = [st.just(HEADER_VALUES[0]), st.sampled_from(HEADER_VALUES), st.binary(max_size=60)]
    if draw(st.integers(0, 5)):
        lines.append(header(b"From", draw(st.one_of(senders[0], *senders))))
    if draw(st.integers(0, 5)):
        subjects = [st.sampled_from([*SUBJECTS, b"Re: [#" + live.encode() + b"] more"]), st.binary(max_size=60)]
        lines.append(header(b"Subject", draw(st.one_of(*subjects))))
    message_id = draw(
        st.sampled_from(
            [
                b"<%s.%d@fuzz.example>" % (salt.encode(), draw(st.integers(0, 10**6))),
                None,
                b"",
                b"<" + b"m" * 2_000 + b">",
                b"\xff\x00",
            ]
        )
    )
    if message_id is not None:
        lines.append(header(b"Message-ID", message_id))
    if draw(st.integers(0, 3)) == 0:
        lines.append(header(b"In-Reply-To", draw(st.sampled_from([b"<ack.abcdefghijkl@ticketflow>", b"<", b"\xff"]))))
    for _ in range(draw(st.integers(0, 2))):
        lines.append(draw(st.binary(max_size=40)))  # whatever a broken mailer writes
    if draw(st.booleans()):
        lines.append(b"MIME-Version: 1.0")
    entity = draw(mime_entity())
    return b"\r\n".join(lines + entity)


@dataclass
class FakeEnvelope:
    """What aiosmtpd hands to handle_DATA, minus the parts the intake does not read."""

    original_content: bytes
    content: bytes
    mail_from: str = "fuzz@example.com"
    rcpt_tos: list[str] = field(default_factory=lambda: ["support@northwind.example"])


SMTP_REPLY = re.compile(r"^(250 2\.0\.0 (\w+) ticket ([a-z2-7]*)|550 5\.\d\.\d .{8,})$")
TICKET_KINDS = {"opened", "duplicate", "follow_up", "reply", "duplicate_reply"}  # the others name no new ticket


async def test_mail_intake_answers_every_mail_with_250_or_550_and_keeps_every_accepted_one(
    ts_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    intake = MailIntake(tickets)
    salt = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    accepted: dict[str, TicketIn | None] = {}

    seen: dict[str, int] = {}
    live = ticket_id_for(f"<{salt}.live@fuzz.example>")

    @settings(FUZZ, max_examples=80)
    @given(raw=raw_mails(salt, live))
    @example(raw=b"From: a@example.com\r\nSubject: Re: [#%s]\r\n\r\nA reply with NUL \x00 in it" % live.encode())
    @example(raw=b"Message-ID: <x@y>\r\nSubject: no From header\r\n\r\nhello")
    @example(raw=b"From: a@example.com\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nunknown charset")
    @example(raw=b"From: a@example.com\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 2_000 + b"\r\nloop")
    @example(raw=b"From: Zo\xc3\xab <a@example.com>\r\nSubject: \xff\x00\r\n\r\nNUL \x00 in the body")
    def mails(raw: bytes) -> None:
        envelope = FakeEnvelope(raw, raw)
        reply = on_loop(loop, intake.handle_DATA(cast(Any, None), cast(Any, None), cast(Any, envelope)))
        # 451 would make the sender retry forever: Temporal is up, so the mail itself is the problem
        found = SMTP_REPLY.match(reply)
        assert found and "\r" not in reply and "\n" not in reply, reply
        outcome = found.group(2) or reply[:9]
        seen[outcome] = seen.get(outcome, 0) + 1
        if found.group(2) in TICKET_KINDS:
            accepted[found.group(3)] = None

    async with make_worker(ts_client, task_queue):
        await tickets.open(valid_ticket(f"<{salt}.live@fuzz.example>"))
        await tickets.wait_for(live, Status.OPEN)
        await asyncio.to_thread(mails)
        print(f"mail intake: replies {sorted(seen.items())}, {len(accepted)} tickets accepted")
        await assert_kept(tickets, pool, accepted)


# --- 4. survey pages ---------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def resolved(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink
) -> AsyncIterator[tuple[TicketClient, str, str]]:
    """A resolved ticket whose survey went out: the client, the ticket id and the genuine survey token."""
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        tid, token = await resolved_with_survey(ts_env, tickets, smtp)
        yield tickets, tid, token


def tampered(token: str) -> st.SearchStrategy[str]:
    """Near misses of a genuine token: one character, one part, or the shape changed."""
    parts = token.split(".")
    return st.one_of(
        st.integers(0, len(token) - 1).map(lambda i: token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]),
        st.just(".".join([parts[0], "2", *parts[2:]])),
        st.just(".".join([*parts[:2], str(int(parts[2]) + 3600), parts[3]])),
        st.just(token + ".x"),
        st.just(token[:-1]),
        st.just(token.upper()),
        st.just(token + "é"),
    )


FORM_FIELDS = st.sampled_from(["score", "nonce", "reason", "comment", "score", "x"])
FORM_VALUES = st.one_of(
    st.sampled_from(["1", "2", "5", "0", "6", "-1", "²", "٣", "9" * 5_000, "", "slow_response", "nope"]),
    odd_text,
)


# A form: fields to urlencode (duplicates included; the page's nonce is added), raw bytes, or over the limit.
Form = list[tuple[str, str]] | bytes
survey_forms: st.SearchStrategy[Form] = st.one_of(
    st.lists(st.tuples(FORM_FIELDS, FORM_VALUES), max_size=6),
    st.binary(max_size=200),
    st.sampled_from([survey_pages.MAX_FORM_BYTES, 5_000_000]).map(lambda n: b"comment=" + b"x" * n),
)


def form_body(form: Form, nonce: str | None) -> bytes:
    if isinstance(form, bytes):
        return form
    if nonce is not None:  # first or last: a junk nonce before it is the one the page reads
        form = [("nonce", nonce), *form] if len(form) % 2 else [*form, ("nonce", nonce)]
    return urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in form]).encode()


def assert_page(answer: Answer, allowed: set[int]) -> None:
    assert answer.crash is None and answer.status in allowed, answer
    assert answer.headers.get("cache-control") == "no-store" and answer.body.startswith(b"<!doctype html>"), answer


async def test_survey_pages_never_record_without_a_genuine_link_and_form(
    resolved: tuple[TicketClient, str, str], config: Config
) -> None:
    tickets, tid, token = resolved
    app = survey_pages.create_app(tickets, SURVEY_SECRET, config.csat)
    loop = asyncio.get_running_loop()
    foreign = survey.new_nonce(token, b"another key")
    other_token = survey.new_nonce("x.1.2.y", SURVEY_SECRET)  # genuine, for another token
    seen: dict[str, int] = {}

    @settings(FUZZ, max_examples=120)
    @given(
        token=st.one_of(st.text(min_size=1, max_size=80), tampered(token), st.just(token)),
        nonce=st.one_of(st.none(), st.text(max_size=40), st.sampled_from([foreign, other_token, "a.b", "."])),
        form=survey_forms,
        method=st.sampled_from(["GET", "POST", "POST"]),
        query=st.one_of(st.just(b""), FORM_VALUES.map(lambda v: b"score=" + quote(v, errors="surrogatepass").encode())),
        declared=st.booleans(),
    )
    @example(token=token, nonce=None, form=b"", method="GET", query=b"score=%C2%B2", declared=False)
    @example(token=token, nonce=None, form=b"", method="GET", query=b"score=" + b"9" * 5_000, declared=False)
    @example(token=token, nonce=foreign, form=b"comment=" + b"x" * 5_000_000, method="POST", query=b"", declared=False)
    def garbage(token: str, nonce: str | None, form: Form, method: str, query: bytes, declared: bool) -> None:
        assume("/" not in token)
        body = form_body(form, nonce)
        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        if declared:
            headers.append((b"content-length", str(len(body)).encode()))
        answer = on_loop(
            loop, call(app, method, f"/survey/{token}", headers=headers, chunks=chunked(body, 1 << 14), query=query)
        )
        assert_page(answer, {200, 400, 410} if method == "GET" else {400, 410, 413})
        seen[f"{method} {answer.status}"] = seen.get(f"{method} {answer.status}", 0) + 1
        if answer.status == 413:  # refused without reading a huge body whole
            assert answer.chunks_read <= survey_pages.MAX_FORM_BYTES // (1 << 14) + 2, answer.chunks_read

    await asyncio.to_thread(garbage)
    assert (await tickets.get(tid)).ratings == []

    @settings(FUZZ, max_examples=20)
    @given(form=survey_forms)
    @example(form=[("score", "²")])
    @example(form=[("score", "9" * 5_000)])
    @example(form=[("score", "5"), ("reason", "slow_response")])
    @example(form=[("score", "2"), ("reason", "slow_response"), ("comment", "NUL \x00 and more")])
    def genuine_form(form: Form) -> None:
        page = on_loop(loop, call(app, "GET", f"/survey/{token}"))
        assert_page(page, {200})
        found = re.search(rb'name="nonce" value="([^"]+)"', page.body)
        assert found
        body = form_body(form, found.group(1).decode())
        answer = on_loop(
            loop, call(app, "POST", f"/survey/{token}", headers=[(b"content-type", b"x")], chunks=chunked(body, 4096))
        )
        assert_page(answer, {200, 400, 409, 413, 422})
        seen[f"genuine {answer.status}"] = seen.get(f"genuine {answer.status}", 0) + 1
        if b"Thank you for your answer" in answer.body:
            sent = parse_qs(body.decode("utf-8", "replace")).get("score", [""])[0]
            rating = on_loop(loop, tickets.get(tid)).ratings[-1]
            assert str(rating.score) == sent and rating.via == "survey", (sent, rating)
            assert rating.reason is None or (rating.reason in config.csat.bad_reasons and rating.score <= 2)

    await asyncio.to_thread(genuine_form)
    print(f"survey pages: answers {sorted(seen.items())}, {len((await tickets.get(tid)).ratings)} ratings")


# --- 5. CLI ------------------------------------------------------------------------------------------------

cli_text = st.text(max_size=30).filter(lambda s: "\x00" not in s)  # an argv entry cannot hold NUL


def run_cli(args: list[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    result = CliRunner().invoke(cli_app, args)
    took = time.monotonic() - started
    # an uncaught exception would be a traceback on a real terminal
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output, (args, result.output)
    return result.exit_code, result.output, took


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporal and PostgreSQL on closed ports: commands that need them fail at once."""
    monkeypatch.setenv("TICKETFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://fuzz@127.0.0.1:{free_port()}/ticketflow")
    for name in ("TICKETFLOW_CONFIG_FILE", "TICKETFLOW_CODEC_KEYS"):
        monkeypatch.delenv(name, raising=False)
    code, output, took = run_cli(["rate", "abcdefghijkl", "5"])
    # the CLI's own promise: an unreachable Temporal is a quick, clear exit 1 (a failure here is a finding)
    assert code == 1 and took <= 5, f"an unreachable Temporal did not fail fast ({took:.1f}s, exit {code}): {output}"


@st.composite
def cli_args(draw: st.DrawFn, folder: Path) -> list[str]:
    command = draw(st.sampled_from(["open", "open-json", "rate", "report", "templates"]))
    if command == "open":
        args = ["open"]
        for option in ("--subject", "--body", "--name", "--email", "--channel", "--type", "--region", "--language"):
            if draw(st.booleans()):
                args += [option, draw(cli_text | st.sampled_from(["", "ada@example.com", "fax", "vip", "EU", "xx"]))]
        return args
    if command == "open-json":
        path = folder / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(draw(json_values | mutated_tickets())), "utf-8", errors="surrogatepass")
        return ["open", "--json", str(path)]
    if command == "rate":
        # int() of a non-decimal digit ('²') or of 4,300+ digits is a known crash: see test_cli_known_crashes
        rating = draw(cli_text.filter(lambda s: not s.isdigit() or (s.isdecimal() and len(s) < 100)))
        return [
            "rate",
            draw(cli_text | st.just("abcdefghijkl")),
            rating,
            *draw(st.sampled_from([[], ["--comment", "x"]])),
        ]
    if command == "report":
        args = ["report"]
        options = {
            "--by": st.sampled_from(["day", "week", "month", "year", "", "DAY"]) | cli_text,
            "--from": st.sampled_from(["2025-01-01", "2025-02-30", "01/02/2025", "9999-12-31", "0001-01-01"])
            | cli_text,
            "--to": st.sampled_from(["2025-01-31", "2024-12-31", "-1"]) | cli_text,
            "--tz": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Base", "", "../etc", "zone.tab"]) | cli_text,
            "-d": st.sampled_from(["billing", "nope", ""]) | cli_text,
        }
        for option, values in options.items():
            if draw(st.booleans()):
                args += [option, draw(values)]
        return args
    return ["templates", "check", "--dir", str(folder / draw(st.sampled_from(["missing", "empty"])))]


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_cli_fails_with_a_short_message_and_no_traceback(
    unreachable: None, tmp_path: Path, data: st.DataObject
) -> None:
    (tmp_path / "empty").mkdir(exist_ok=True)
    args = data.draw(cli_args(tmp_path))
    code, output, took = run_cli(args)
    assert code in (0, 1, 2), (args, code, output)
    assert took < 10, (args, took)
    if code:
        assert output.strip(), args
    if code and args[0] != "templates":  # the template check lists every problem: see test_cli_known_crashes
        assert len(output.strip().splitlines()) <= 6, (args, output)


ONCE_CRASHED = [
    ("rate with a non-decimal digit", ["rate", "abcdefghijkl", "²"], None),
    ("rate with 5000 digits", ["rate", "abcdefghijkl", "9" * 5_000], None),
    ("open --json of a missing file", ["open", "--json", "{dir}/missing.json"], None),
    ("open --json of a file that is not UTF-8", ["open", "--json", "{dir}/t.json"], b"\xff\xfe{"),
    ("open --json nested 10,000 deep", ["open", "--json", "{dir}/t.json"], b"[" * 10_000),
    (
        "open --json with a 5,000-digit number",
        ["open", "--json", "{dir}/t.json"],
        b'{"subject": ' + b"9" * 5_000 + b"}",
    ),
    ("templates check of a missing folder says so in one line", ["templates", "check", "--dir", "{dir}/missing"], None),
]


@pytest.mark.parametrize(("what", "args", "content"), ONCE_CRASHED, ids=[x[0] for x in ONCE_CRASHED])
def test_cli_inputs_that_once_crashed(
    unreachable: None, tmp_path: Path, what: str, args: list[str], content: bytes | None
) -> None:
    if content is not None:
        (tmp_path / "t.json").write_bytes(content)
    code, output, _ = run_cli([a.replace("{dir}", str(tmp_path)) for a in args])
    assert code in (1, 2) and len(output.strip().splitlines()) <= 2, output


# --- 6. policy file ----------------------------------------------------------------------------------------


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML also wants DEL escaped."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict), value
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items()) + "\n"


DEFAULT_POLICY = tomllib.loads((Path(__file__).parent.parent / "ticketflow" / "default_config.toml").read_text("utf-8"))


def policy_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from policy_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from policy_paths(v, (*path, i))


POLICY_PATHS = list(policy_paths(DEFAULT_POLICY))
# numbers: where an absurd value is most likely to be accepted and break a ticket later
NUMBER_PATHS = [p for p in POLICY_PATHS if str(p[-1]).endswith(("minutes", "factor", "fractions", "confidence"))]
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.sampled_from([0, -1, 1e308, 10**12, 0.5, 2**62]),
    odd_text.filter(text_ok),
    st.dates(),
    st.times(),
    st.sampled_from(
        ["Mars/Base", "", "../etc/passwd", "zone.tab", "UTC/x", "Europe/", "25:00", "24:00", "07:00+02:00"]
    ),
    st.sampled_from(["12:60", "nope", "eu_office", "us_east", "mon", "01-32", "02-29", "vip", "urgent", "calendar"]),
)
ABSURD_NUMBERS = [math.inf, -math.inf, math.nan, 1e300, 1e15, 2**62, 0, -1, 1e-300]
toml_junk = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def mentions(err: ValidationError, path: tuple[str | int, ...]) -> bool:
    """Whether the refusal names some part of the mutated path, by location or in its message."""
    names = {str(p) for p in path}
    return any(names & {str(p) for p in e["loc"]} or any(n in e["msg"] for n in names) for e in err.errors())


def assert_usable(cfg: Config) -> None:
    """An accepted policy gives every ticket deadlines that a workflow can place (no overflow, no NaN)."""
    start = datetime(2100, 1, 1, tzinfo=UTC)
    for department in cfg.departments:
        for priority in Priority:
            for customer_type in [None, *CustomerType]:
                resolved = cfg.sla.resolve(department, priority, customer_type)
                for seconds in resolved.seconds.values():
                    if seconds is not None:
                        assert seconds >= 0 and start + timedelta(seconds=seconds) >= start, (department, seconds)
    minutes = [t.budget_minutes for t in cfg.tiers] + [cfg.csat.window_minutes, cfg.csat.delay_minutes]
    minutes += [m for m in (cfg.csat.reminder_minutes, cfg.pending.reminder_minutes) if m is not None]
    minutes += [d.csat_delay_minutes for d in cfg.departments.values() if d.csat_delay_minutes is not None]
    for m in minutes:
        assert math.isfinite(m) and start + timedelta(minutes=m) >= start, m
    for calendar in cfg.calendars.values():
        assert add_business_seconds(calendar, start, 3600) > start


def test_the_toml_writer_round_trips_the_default_policy() -> None:
    assert tomllib.loads(toml_document(DEFAULT_POLICY)) == DEFAULT_POLICY


def at(path: str, value: Any) -> tuple[tuple[str | int, ...], str, Any]:
    """One replacement, the path written with dots: for the explicit examples."""
    return (tuple(int(p) if p.isdigit() else p for p in path.split(".")), "replace", value)


@settings(FUZZ, max_examples=250)
@given(
    mutations=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(POLICY_PATHS), st.sampled_from(["delete", "replace", "unknown"]), toml_junk),
            st.tuples(st.sampled_from(NUMBER_PATHS), st.just("replace"), st.sampled_from(ABSURD_NUMBERS)),
        ),
        min_size=1,
        max_size=2,
    )
)
@example(mutations=[at("sla.targets.urgent.first_response_minutes", math.inf)])
@example(mutations=[at("sla.targets.low.resolution_minutes", 1e300)])
@example(mutations=[at("tiers.0.budget_minutes", 2**62)])
@example(mutations=[at("csat.window_minutes", math.inf), at("csat.reminder_minutes", 1e300)])
@example(mutations=[at("sla.overrides.0.factor", 1e300)])
@example(mutations=[at("automation.0.conditions.1.value", "(" * 5_000 + ")" * 5_000)])
@example(mutations=[at("automation.0.conditions.1.value", "a{99999999999}")])
@example(mutations=[at("departments.billing.timezone", "zone.tab")])
def test_mutated_policies_load_or_name_the_field(tmp_path: Path, mutations: list[tuple[Any, str, Any]]) -> None:
    data = tomllib.loads(toml_document(DEFAULT_POLICY))  # a deep copy
    touched: tuple[str | int, ...] = ()
    for path, action, value in mutations:
        if action == "unknown":
            path = (*path[:-1], "unknown_key")
        mutate(data, path, value, delete=action == "delete")
        touched += path
    file = tmp_path / "policy.toml"
    file.write_text(toml_document(data), "utf-8")
    try:
        cfg = load_config(file)
    except ValidationError as err:
        assert all(e["msg"] for e in err.errors()) and mentions(err, touched), (touched, str(err)[:2000])
        return
    assert_usable(cfg)


@settings(FUZZ, max_examples=250)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        st.lists(
            st.tuples(st.sampled_from([*DEFAULT_POLICY, "x", '"a b"', "a.b"]), toml_junk.map(toml_value)), max_size=6
        ).map(lambda kv: "\n".join(f"{k} = {v}" for k, v in kv)),
        st.sampled_from(["a = " + "1" * 5_000, "[" * 5_000, "a = [" * 2_000, "a = 1e999", "a = nan"]),
    ),
    raw=st.one_of(st.none(), st.binary(max_size=40)),
)
@example(text="", raw=b"\x80 not UTF-8")
@example(text="a = " + "1" * 5_000, raw=None)
@example(text="a = " + "[" * 5_000, raw=None)
def test_any_policy_text_loads_or_is_refused_with_a_reason(tmp_path: Path, text: str, raw: bytes | None) -> None:
    file = tmp_path / "policy.toml"
    file.write_bytes(text.encode("utf-8", "surrogatepass") + (raw or b""))
    try:
        cfg = load_config(file)
    except ValidationError as err:
        assert all(e["msg"] for e in err.errors())
        return
    except tomllib.TOMLDecodeError as err:
        assert str(err)
        return
    assert_usable(cfg)
