"""Fault injection: a few hundred tickets in flight with SLA timers pending, on a file-backed Temporal
dev server, a real PostgreSQL and a real SMTP server, while the suite kills and stops things:

  (a) SIGKILL the worker at random moments, several times, restarting it each time
  (b) stop and restart the Temporal dev server
  (c) stop PostgreSQL for 30 s
  (d) stop the SMTP server for 60 s
  (e) run two workers and SIGKILL one

Then every ticket is worked to its end and the suite checks: every ticket closed, none lost or
duplicated; every email delivered exactly once at the SMTP server (a second copy only for a send the
outbox recorded as interrupted, the one window SMTP cannot close); every SLA timer fired; the audit
log has no gap or duplicate; every business counter equals its rows. A summary table is printed.

Bounded: the policy runs SLA targets of seconds, so the whole suite takes about five minutes.

The waits here are wall-clock faults, not timer tests: an outage of a real server lasts real seconds
(PostgreSQL 30 s, SMTP 60 s, as the issue asks), and a few seconds between faults let work be in flight
when the next one hits. No assertion depends on a sleep being long enough: every check runs after each
ticket has been worked to its end, and every wait for a state polls with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import pytest_asyncio
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table

from starter.client import TicketClient
from starter.devstack import EmbeddedPostgres, TemporalDevServer, free_port, wait_for_temporal
from starter.smtp_sink import SmtpSink
from tests.factories import ticket
from tests.test_e2e import CLI, WorkerProcess, assert_counters_match_rows, count_rows
from ticketflow.config import load_config
from ticketflow.models import Status
from ticketflow.temporal import connect

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(900)]
T = TypeVar("T")
TICKETS = 200
SUBJECTS = [
    "Cannot log in since this morning",
    "Charged twice for my invoice",
    "Wrong item delivered, need an exchange",
    "VPN keeps disconnecting",
    "Quote for the enterprise plan",
    "Export shows error 502",
]


def chaos_policy(folder: Path) -> Path:
    """The default organisation at fault-injection speed: SLA targets of seconds counted around the clock,
    tier budgets of minutes, surveys a few seconds after resolution and a short window."""
    text = resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8")
    edits = {
        r"first_response_minutes = \d+": "first_response_minutes = 0.15",
        r"next_reply_minutes = \d+": "next_reply_minutes = 0.3",
        r"resolution_minutes = \d+": "resolution_minutes = 0.5",
        r"budget_minutes = \d+": "budget_minutes = 2",
        r'(?m)^hours = "business"': 'hours = "calendar"',
        r'notify_out_of_hours = \["urgent"\]': 'notify_out_of_hours = ["urgent", "high", "normal", "low"]',
        r"(?m)^delay_minutes = .*$": "delay_minutes = 0.05",
        r"(?m)^csat_delay_minutes = .*$": "csat_delay_minutes = 0.05",
        # A minute: the ratings arrive while the surviving worker replays every ticket and drains the outbox
        # the SMTP outage left; 18 s was not always enough on a loaded 2-core machine.
        r"(?m)^window_minutes = .*$": "window_minutes = 1.0",
        r"(?m)^reminder_minutes = 4320.*$": "reminder_minutes = 0.15",
    }
    for pattern, replacement in edits.items():
        text, n = re.subn(pattern, replacement, text)
        assert n >= 1, pattern
    path = folder / "chaos-policy.toml"
    path.write_text(text, "utf-8")
    load_config(path)  # valid
    return path


@dataclass
class Stack:
    folder: Path
    temporal: TemporalDevServer
    pg: EmbeddedPostgres
    database_url: str
    smtp: SmtpSink
    env: dict[str, str]
    metrics_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    faults: list[tuple[str, str, str]] = field(default_factory=list)  # fault, what happened, verified at the end

    def worker(self, name: str) -> WorkerProcess:
        process = WorkerProcess(self.env, self.folder / f"worker-{name}.log")
        process.start()
        self.workers.append(process)
        return process


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    temporal = TemporalDevServer(
        port=free_port(), ui_port=None, db_file=tmp_path / "temporal.db", log_file=tmp_path / "temporal.log"
    )
    temporal.start()
    pg = EmbeddedPostgres(tmp_path / "pgdata", keep=True)
    url = await asyncio.to_thread(pg.start)
    smtp = SmtpSink(port=free_port()).start()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TICKETFLOW_TEMPORAL_ADDRESS": temporal.address,
        "TICKETFLOW_TASK_QUEUE": "chaos",
        "TICKETFLOW_SMTP_PORT": str(smtp.port),
        "TICKETFLOW_CONFIG_FILE": str(chaos_policy(tmp_path)),
        "TICKETFLOW_SURVEY_SECRET": "chaos-survey-secret",
        "TICKETFLOW_METRICS_PORT": "0",
        "TICKETFLOW_SDK_METRICS_PORT": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    await wait_for_temporal(temporal.address)
    s = Stack(tmp_path, temporal, pg, url, smtp, env, metrics_dir)
    try:
        yield s
    finally:
        for w in s.workers:
            w.stop()
        smtp.stop()
        temporal.stop()
        await asyncio.to_thread(pg.stop)


async def retrying(fn: Callable[[], Awaitable[T]], within: float = 180) -> T:
    """The test's own calls ride out the faults as an integration would: retry until it works."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def client_for(stack: Stack) -> TicketClient:
    return TicketClient(await retrying(lambda: connect(stack.temporal.address)), "chaos")


def rows(stack: Stack, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(stack.database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


async def wait_until(what: str, check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(1)


async def test_tickets_survive_kills_and_outages_of_every_component(stack: Stack) -> None:
    rnd = random.Random(20261123)
    worker = stack.worker("a")
    tickets = await client_for(stack)
    gate = asyncio.Semaphore(16)

    async def open_one(i: int) -> str:
        async with gate:
            payload = ticket(subject=f"{SUBJECTS[i % len(SUBJECTS)]} ({i})", customer={"email": f"c{i}@example.com"})
            return (await retrying(lambda: tickets.open(payload))).ticket_id

    ids = await asyncio.gather(*(open_one(i) for i in range(TICKETS)))
    assert len(set(ids)) == TICKETS

    # (a) SIGKILL at random moments while acknowledgements go out and SLA timers come due
    kills = 0
    for _ in range(3):
        await asyncio.sleep(rnd.uniform(1.0, 4.0))
        worker.kill()
        kills += 1
        worker = stack.worker(f"a{kills}")
    acked = len(rows(stack, "SELECT 1 FROM outbox WHERE template IN ('acknowledgement', 'out_of_hours')"))
    stack.faults.append(("(a) worker SIGKILLed 3 times at random moments", f"{acked} acks out by the last kill", ""))

    # (b) the Temporal server goes away and comes back (file-backed: nothing is forgotten)
    await asyncio.sleep(3)
    await asyncio.to_thread(stack.temporal.stop)
    await asyncio.sleep(5)
    await asyncio.to_thread(stack.temporal.start)
    await wait_for_temporal(stack.temporal.address)
    stack.faults.append(("(b) Temporal dev server stopped and restarted", "down 5 s", ""))

    # (c) PostgreSQL down for 30 s: every activity that needs it fails and is retried
    await asyncio.sleep(3)
    await asyncio.to_thread(stack.pg.stop)
    await asyncio.sleep(30)
    await asyncio.to_thread(stack.pg.start)
    stack.faults.append(("(c) PostgreSQL stopped for 30 s", "activities retried until it was back", ""))

    # (d) the SMTP relay down for 60 s: mail waits in the outbox and is retried with backoff
    await asyncio.sleep(3)
    stack.smtp.stop()
    await asyncio.sleep(60)
    pending = len(rows(stack, "SELECT 1 FROM outbox WHERE status = 'pending'"))
    stack.smtp.start()
    stack.faults.append(("(d) SMTP server stopped for 60 s", f"{pending} mails waiting when it came back", ""))

    # (e) two workers, then one of them killed
    second = stack.worker("b")
    await asyncio.sleep(5)
    worker.kill()
    kills += 1
    stack.faults.append(("(e) two workers, one SIGKILLed", "the survivor took over", ""))

    # Work every ticket to its end through the surviving worker.
    tickets = await client_for(stack)

    async def finish(i: int, tid: str) -> None:
        async with gate:
            await retrying(lambda: tickets.wait_for(tid, Status.OPEN, within=120))
            await retrying(lambda: tickets.reply(tid, "anna", "This is fixed now."))
            await retrying(lambda: tickets.resolve(tid, "anna"))
            if i % 4 == 0:
                answers: list[int | str] = [5, 4, 2, "good"]
                score = answers[i % 3]
                await retrying(lambda: tickets.rate(tid, score))

    await asyncio.gather(*(finish(i, tid) for i, tid in enumerate(ids)))
    finals = await asyncio.gather(*(retrying(lambda t=tid: tickets.final_state(t)) for tid in ids))  # type: ignore[misc]
    second.stop()
    await verify(stack, ids, finals, kills)


async def verify(stack: Stack, ids: list[str], finals: list[Any], kills: int) -> None:
    console = Console(width=160)
    # A workflow task that failed (non-determinism after a restart, a bug) is retried for ever and can hide
    # behind retries that finally pass: none may appear in any worker's log.
    for log in sorted(stack.folder.glob("worker-*.log")):
        failed = [line for line in log.read_text("utf-8", "replace").splitlines() if "Failed activation" in line]
        nondeterminism = [line for line in log.read_text("utf-8", "replace").splitlines() if "Nondeterminism" in line]
        assert not failed and not nondeterminism, f"{log.name}: {(failed + nondeterminism)[:3]}"
    assert [f.status for f in finals] == [Status.CLOSED] * len(ids)
    db = rows(stack, "SELECT id, status FROM tickets")
    assert sorted(r["id"] for r in db) == sorted(ids), "a ticket was lost or duplicated"
    assert {r["status"] for r in db} == {"closed"}

    audit = rows(stack, "SELECT ticket_id, array_agg(seq ORDER BY seq) AS seqs FROM audit_log GROUP BY ticket_id")
    gaps = {a["ticket_id"]: sorted(set(range(1, max(a["seqs"]) + 1)) - set(a["seqs"])) for a in audit}
    assert len(audit) == len(ids) and not any(gaps.values()), (
        f"the audit log has gaps: { {t: g for t, g in gaps.items() if g} }"
    )

    outbox = rows(stack, "SELECT key, template, message_id, status, attempts, interrupted FROM outbox")
    assert {o["status"] for o in outbox} == {"sent"}, Counter(o["status"] for o in outbox)
    delivered = Counter(m.message_id for m in stack.smtp.messages)
    interrupted = {o["message_id"] for o in outbox if o["interrupted"]}
    for o in outbox:
        n = delivered[o["message_id"]]
        assert n >= 1, f"{o['key']} was never delivered"
        assert n == 1 or (n == 2 and o["message_id"] in interrupted), f"{o['key']} delivered {n} times"
    assert not set(delivered) - {o["message_id"] for o in outbox}, "mail went out that the outbox never had"
    per_ticket = Counter(o["key"].split(":")[0] for o in outbox)
    assert per_ticket["ack"] == len(ids) and per_ticket["resolved"] == len(ids)

    breaches = rows(
        stack,
        "SELECT ticket_id, count(*) AS n FROM sla_events WHERE metric = 'first_response' AND event = 'breached'"
        " GROUP BY ticket_id",
    )
    assert len(breaches) == len(ids) and {b["n"] for b in breaches} == {1}, "a first-response breach did not fire once"

    metric_rows = await count_rows_sync(stack, ids)
    assert_counters_match_rows(stack.metrics_dir, pool_rows=metric_rows, kills=kills)

    duplicates = sum(delivered[m] - 1 for m in interrupted)
    checks = (
        f"{len(ids)} tickets closed, none lost or duplicated; audit gapless; {len(outbox)} mails delivered "
        f"({len(interrupted)} interrupted sends, {duplicates} second copies); every first-response breach "
        "fired exactly once; counters equal rows"
    )
    table = Table(title="fault injection: what was done and what held")
    table.add_column("fault")
    table.add_column("during the run")
    for fault, observed, _ in stack.faults:
        table.add_row(fault, observed)
    console.print(table)
    console.print(f"verified once every ticket was worked to its end: {checks}")
    console.print(f"workers started: {len(stack.workers)}, SIGKILLs: {kills}; command: {' '.join(CLI)} worker")


async def count_rows_sync(stack: Stack, ids: list[str]) -> dict[str, Any]:
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        stack.database_url, min_size=1, max_size=2, kwargs={"row_factory": dict_row}, open=False
    )
    await pool.open()
    try:
        return await count_rows(pool, ids)
    finally:
        await pool.close()
