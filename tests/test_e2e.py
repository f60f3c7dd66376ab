"""End to end on the real Temporal dev server, real PostgreSQL and a real SMTP server: the CLI as
a user runs it, visibility by search attributes, and a worker killed with SIGKILL mid-flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from starter.client import TicketClient
from starter.devstack import TemporalDevServer, free_port
from starter.smtp_sink import SmtpSink
from tests.conftest import StartRecorder, WorkerFactory, mail_settled, terminate_leftovers
from tests.factories import ticket
from tests.prom import sdk_metric
from ticketflow.config import load_config
from ticketflow.models import Status

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
CLI = [sys.executable, "-m", "starter.cli"]


def cli_env(server: TemporalDevServer, task_queue: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TICKETFLOW_TEMPORAL_ADDRESS": server.address,
        "TICKETFLOW_TASK_QUEUE": task_queue,
        "COLUMNS": "200",
        **extra,
    }


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


async def poll(fn: Any, check: Any, within: float = 20.0) -> Any:
    """Visibility is eventually consistent: ask again until `check` holds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await fn()
        if check(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_cli_open_show_reply_list(
    dev_server: TemporalDevServer,
    dev_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    smtp: SmtpSink,
) -> None:
    env = cli_env(dev_server, task_queue)
    async with make_worker(dev_client, task_queue):
        payload = ticket(
            subject="Rechnung doppelt abgebucht",
            body="Guten Tag, die Rechnung wurde doppelt abgebucht. Bitte erstatten Sie den Betrag.",
            customer={"name": "Jonas Müller", "email": "jonas@example.de", "type": "vip"},
        )
        opened = await asyncio.to_thread(run_cli, env, "open", "--json", "-", stdin=json.dumps(payload))
        assert opened.returncode == 0, opened.stderr
        ticket_id = opened.stdout.split("opened ticket ")[1].split()[0]

        again = await asyncio.to_thread(run_cli, env, "open", "--json", "-", stdin=json.dumps(payload))
        assert again.returncode == 0 and "already exists" in again.stdout and ticket_id in again.stdout

        tickets = TicketClient(dev_client, task_queue)
        state = await tickets.wait_for(ticket_id, Status.OPEN)
        assert (state.department, state.language, state.priority) == ("billing", "de", "urgent")  # high + VIP

        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT customer_name, subject, status, department FROM tickets WHERE id = %s", (ticket_id,)
                )
            ).fetchone()
        assert row == {
            "customer_name": "Jonas Müller",
            "subject": "Rechnung doppelt abgebucht",
            "status": "open",
            "department": "billing",
        }
        await mail_settled(dev_client, ticket_id)
        acks = [m for m in smtp.messages if m.message_id == f"<ack.{ticket_id}@ticketflow>"]
        assert len(acks) == 1 and acks[0].rcpt_tos == ["jonas@example.de"]

        shown = await asyncio.to_thread(run_cli, env, "show", ticket_id, "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["department"] == "billing"

        replied = await asyncio.to_thread(run_cli, env, "reply", ticket_id, "--agent", "carmen", "--body", "Erledigt.")
        assert replied.returncode == 0, replied.stderr
        assert "first_response" in replied.stdout and "met" in replied.stdout

        async def listed() -> list[dict[str, Any]]:
            out = await asyncio.to_thread(
                run_cli, env, "list", "--department", "billing", "--status", "open", "--priority", "urgent", "--json"
            )
            assert out.returncode == 0, out.stderr
            return list(json.loads(out.stdout))

        rows = await poll(listed, lambda rs: any(r["ticket_id"] == ticket_id for r in rs))
        mine = next(r for r in rows if r["ticket_id"] == ticket_id)
        due = await asyncio.to_thread(run_cli, env, "list", "--due-within", "30d", "--json")
        assert ticket_id in {r["ticket_id"] for r in json.loads(due.stdout)}  # the resolution target is ahead
        breached = await asyncio.to_thread(run_cli, env, "list", "--breached", "--json")
        assert ticket_id not in {r["ticket_id"] for r in json.loads(breached.stdout)}
        assert mine["tier"] == 1 and mine["channel"] == "email" and mine["sla_breached"] is False
        assert mine["sla_due_at"] is not None

        escalated = await asyncio.to_thread(
            run_cli, env, "escalate", ticket_id, "--actor", "carmen", "--reason", "refund over limit"
        )
        assert escalated.returncode == 0, escalated.stderr
        tier2 = await poll(
            lambda: tickets.list(min_tier=2, department="billing"), lambda rs: any(r.ticket_id == ticket_id for r in rs)
        )
        assert any(r.ticket_id == ticket_id and r.tier == 2 for r in tier2)

        # errors are precise and exit non-zero
        bad = await asyncio.to_thread(
            run_cli, env, "open", "--subject", "x", "--body", "y", "--name", "N", "--email", "not-an-email"
        )
        assert bad.returncode == 2 and "customer.email" in bad.stderr
        wrong = await asyncio.to_thread(run_cli, env, "rate", ticket_id, "5")
        assert wrong.returncode == 1 and "cannot rate a ticket that is open" in wrong.stderr
        unknown = await asyncio.to_thread(run_cli, env, "transfer", ticket_id, "marketing", "--actor", "carmen")
        assert unknown.returncode == 1 and "unknown department 'marketing'" in unknown.stderr
        moved = await asyncio.to_thread(
            run_cli, env, "transfer", ticket_id, "technical_support", "--actor", "carmen", "--reason", "API bug"
        )
        assert moved.returncode == 0, moved.stderr
        assert (await tickets.get(ticket_id)).department == "technical_support"
        registered = await asyncio.to_thread(run_cli, env, "register-search-attributes")
        assert registered.returncode == 0 and "already registered" in registered.stdout  # idempotent
        missing = await asyncio.to_thread(run_cli, env, "show", "aaaaaaaaaaaa")
        assert missing.returncode == 1 and "not found" in missing.stderr
        await tickets.resolve(ticket_id, "carmen")


@pytest.fixture
def fast_csat_config(tmp_path: Path) -> Path:
    """The default organisation with a survey a second after resolution and a fifteen-second window.

    The window only has to outlast one ticket's resolve-then-rate round trip on a loaded CI machine
    (a six-second window once closed a ticket before its rating arrived); every extra second is
    spent waiting for the unrated tickets to close."""
    text = resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8")
    for key, value in {
        "delay_minutes": "0.02",
        "csat_delay_minutes": "0.02",
        "window_minutes": "0.25",
        "reminder_minutes = 4320": "0.05",  # the survey reminder (the pending reminder stays at 2 days)
    }.items():
        name = key.split(" ")[0]
        text, n = re.subn(
            rf"(?m)^{re.escape(key)}\b.*$" if " " in key else rf"(?m)^{name} = .*$", f"{name} = {value}", text
        )
        assert n >= 1, key
    path = tmp_path / "fast-csat.toml"
    path.write_text(text, "utf-8")
    csat = load_config(path).csat
    assert (csat.delay_minutes, csat.window_minutes, csat.reminder_minutes) == (0.02, 0.25, 0.05)
    return path


class WorkerProcess:
    """`ticketflow worker` as a separate process, so it can be SIGKILLed like a crashed pod."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*CLI, "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def worker_env(
    dev_server: TemporalDevServer, task_queue: str, migrated: str, smtp: SmtpSink, fast_csat_config: Path
) -> Iterator[dict[str, str]]:
    yield cli_env(
        dev_server,
        task_queue,
        DATABASE_URL=migrated,
        TICKETFLOW_SMTP_PORT=str(smtp.port),
        TICKETFLOW_SURVEY_SECRET="e2e-survey-secret",
        TICKETFLOW_METRICS_PORT="0",
        TICKETFLOW_SDK_METRICS_PORT="0",
        TICKETFLOW_CONFIG_FILE=str(fast_csat_config),
    )


async def test_sigkilled_worker_loses_nothing_and_redelivers_only_interrupted_sends(
    dev_client: Client, worker_env: dict[str, str], task_queue: str, pool: Pool, smtp: SmtpSink, tmp_path: Path
) -> None:
    n = 40
    recorder = StartRecorder()
    config = dev_client.config()
    config["interceptors"] = [recorder]
    client = Client(**config)
    tickets = TicketClient(client, task_queue)
    # Counters in prometheus-client's multiprocess files outlive a SIGKILL, so what every worker
    # process counted can be added up at the end and compared with the rows in PostgreSQL.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    worker = WorkerProcess({**worker_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, tmp_path / "worker.log")
    worker.start()
    try:
        payloads = [
            ticket(subject=f"Printer on floor {i} is broken", body="It shows error 502 again, please help.")
            for i in range(n)
        ]
        opened = await asyncio.gather(*(tickets.open(p) for p in payloads))
        ids = [o.ticket_id for o in opened]
        ack_ids = {f"<ack.{t}@ticketflow>" for t in ids}

        def acked() -> int:
            return sum(1 for m in smtp.messages if m.message_id in ack_ids)

        async def acked_now() -> int:
            return acked()

        await poll(acked_now, lambda k: k >= 3, within=60)
        worker.kill()  # mid-flight: some tickets acknowledged, others not yet
        killed_at = acked()
        assert killed_at < n, "the worker finished everything before it was killed; the test proved nothing"

        worker.start()
        for tid in ids:
            await tickets.wait_for(tid, Status.OPEN, within=90)
        worker.kill()  # again, with every ticket open and timers pending
        worker.start()
        await asyncio.gather(*(tickets.escalate(t, "wei", "needs a specialist") for t in ids[:6]))
        scores: list[int | str] = [5, 4, 1, "good", "bad", 3] * 2

        async def resolve_and_rate(tid: str, score: int | str | None) -> None:
            await tickets.resolve(tid, "wei")
            if score is not None:  # straight after its own resolution, well inside the survey window
                await tickets.rate(tid, score)

        await asyncio.gather(*(resolve_and_rate(t, s) for t, s in zip(ids, [*scores, *[None] * (n - 12)], strict=True)))
        finals = await asyncio.wait_for(asyncio.gather(*(tickets.final_state(t) for t in ids)), 120)
    finally:
        worker.stop()
        await terminate_leftovers(client, recorder.ids)

    assert all(f.status == Status.CLOSED for f in finals)
    async with pool.connection() as conn:
        rows = await (await conn.execute("SELECT id, status FROM tickets WHERE id = ANY(%s)", (ids,))).fetchall()
        audit = await (
            await conn.execute(
                "SELECT ticket_id, count(*) AS n, max(seq) AS top FROM audit_log WHERE ticket_id = ANY(%s)"
                " GROUP BY ticket_id",
                (ids,),
            )
        ).fetchall()
    assert sorted(r["id"] for r in rows) == sorted(ids) and {r["status"] for r in rows} == {"closed"}
    assert all(a["n"] == a["top"] for a in audit) and len(audit) == n  # no gaps, no duplicates

    # Nothing lost: every acknowledgement and survey reached the SMTP server. SMTP has no way to ask a
    # relay whether a message arrived, so a worker killed between the relay's "250 OK" to DATA and the
    # outbox commit (a few milliseconds) cannot know it delivered: the retry sends again, with the same
    # Message-ID so mail clients collapse it. The outbox records every attempt that died mid-way; a
    # second delivery is allowed only for exactly those messages, never for a cleanly recorded one.
    per_key = Counter(m.message_id for m in smtp.messages)
    async with pool.connection() as conn:
        outbox = await (
            await conn.execute("SELECT message_id, status, interrupted FROM outbox WHERE ticket_id = ANY(%s)", (ids,))
        ).fetchall()
    interrupted = {o["message_id"] for o in outbox if o["interrupted"] > 0}
    assert {o["status"] for o in outbox} == {"sent"}
    expected = {o["message_id"] for o in outbox} | {f"<ack.{t}@ticketflow>" for t in ids}
    expected |= {f"<csat.{t}.1@ticketflow>" for t in ids[12:]}  # rated at once: no survey needed
    for mid in sorted(expected):
        assert per_key[mid] >= 1, f"{mid} was lost"
        if per_key[mid] > 1:
            assert mid in interrupted, f"{mid} delivered {per_key[mid]} times without an interrupted attempt"
            assert per_key[mid] == 2
    duplicates = sum(per_key[m] - 1 for m in interrupted)
    print(
        f"\nSIGKILL x2 with {n} tickets: {killed_at} acks out at the first kill, "
        f"{len(interrupted)} sends interrupted mid-way, {duplicates} redelivered with the same Message-ID"
    )
    assert_counters_match_rows(metrics_dir, pool_rows=await count_rows(pool, ids), kills=2)


async def count_rows(pool: Pool, ids: list[str]) -> dict[str, Any]:
    async with pool.connection() as conn:

        async def scalar(sql: str) -> int:
            row = await (await conn.execute(sql, (ids,))).fetchone()
            assert row is not None
            return int(next(iter(row.values())))

        audit = {
            r["event"]: r["n"]
            for r in await (
                await conn.execute(
                    "SELECT event, count(*) AS n FROM audit_log WHERE ticket_id = ANY(%s) GROUP BY event", (ids,)
                )
            ).fetchall()
        }
        sla = {
            (r["metric"], r["event"]): r["n"]
            for r in await (
                await conn.execute(
                    "SELECT metric, event, count(*) AS n FROM sla_events WHERE ticket_id = ANY(%s) AND metric <> 'tier'"
                    " GROUP BY metric, event",
                    (ids,),
                )
            ).fetchall()
        }
        by_department = {
            r["department"]: r["n"]
            for r in await (
                await conn.execute(
                    "SELECT department, count(*) AS n FROM tickets WHERE id = ANY(%s) GROUP BY department", (ids,)
                )
            ).fetchall()
        }
        return {
            "audit": audit,
            "sla": sla,
            "by_department": by_department,
            "ratings": await scalar("SELECT count(*) FROM csat_ratings WHERE ticket_id = ANY(%s)"),
            "sent": await scalar("SELECT count(*) FROM outbox WHERE ticket_id = ANY(%s) AND status = 'sent'"),
        }


def assert_counters_match_rows(metrics_dir: Path, pool_rows: dict[str, Any], kills: int) -> None:
    """Counters never exceed the rows (no double counting on retries or replays after a kill).

    They can fall short only by an increment a SIGKILL lands between a commit and the next line (the counters
    are bumped as the commit returns, with no await in between). Steps of different kinds commit concurrently,
    so a kill may catch one of each: a counter may fall short by at most one per kill. A count taken after
    another round trip (as `sent` once was, after QUIT) misses more than that."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    samples = [s for family in registry.collect() for s in family.samples]

    def total(name: str, **labels: str) -> int:
        return round(sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items()))

    audit, sla = pool_rows["audit"], pool_rows["sla"]
    created_by_department: Counter[str] = Counter()
    for s in samples:
        if s.name == "ticketflow_tickets_total" and s.labels["event"] == "created":
            created_by_department[s.labels["department"]] += round(s.value)
    pairs = {
        "created": (total("ticketflow_tickets_total", event="created"), audit.get("categorised", 0)),
        "resolved": (total("ticketflow_tickets_total", event="resolved"), audit.get("resolved", 0)),
        "closed": (total("ticketflow_tickets_total", event="closed"), audit.get("closed", 0)),
        "escalations": (total("ticketflow_escalations_total"), audit.get("escalated", 0) + audit.get("deescalated", 0)),
        "surveys": (total("ticketflow_csat_surveys_sent_total"), audit.get("survey_sent", 0)),
        "ratings": (total("ticketflow_csat_score_count"), pool_rows["ratings"]),
        "emails sent": (total("ticketflow_notifications_total", outcome="sent"), pool_rows["sent"]),
        "first responses": (
            total("ticketflow_first_response_seconds_count", time="business"),
            sla.get(("first_response", "fulfilled"), 0),
        ),
        "resolutions": (
            total("ticketflow_resolution_seconds_count", time="business"),
            sla.get(("resolution", "fulfilled"), 0),
        ),
        "sla reminders": (
            total("ticketflow_sla_events_total", event="reminder"),
            sum(n for (_, e), n in sla.items() if e == "reminder"),
        ),
        "sla fulfilled": (
            total("ticketflow_sla_events_total", event="met")
            + total("ticketflow_sla_events_total", event="fulfilled_late"),
            sum(n for (_, e), n in sla.items() if e == "fulfilled"),
        ),
    }
    print(f"\ncounter/rows after SIGKILL x{kills}:", {k: f"{c}/{r}" for k, (c, r) in pairs.items()})
    assert pairs["created"][1] > 0 and pairs["resolved"][1] > 0 and pairs["ratings"][1] > 0
    assert pairs["escalations"][1] > 0 and pairs["surveys"][1] > 0
    shortfall = 0
    for what, (counted, rows) in pairs.items():
        assert counted <= rows, f"{what}: counted {counted} but only {rows} rows: double counting"
        assert rows - counted <= kills, f"{what} fell short of the rows by {rows - counted}: {pairs}"
        shortfall += rows - counted
    if shortfall == 0:
        assert dict(created_by_department) == pool_rows["by_department"]


async def test_the_workflow_cache_setting_bounds_what_a_worker_keeps_and_evicted_tickets_replay(
    dev_client: Client, worker_env: dict[str, str], task_queue: str, tmp_path: Path
) -> None:
    """TICKETFLOW_WORKFLOW_CACHE reaches the SDK: with room for 2, five open tickets leave at most 2 in memory,
    and a ticket pushed out answers from its history (replayed) with the state it had."""
    sdk_port = free_port()
    env = {**worker_env, "TICKETFLOW_WORKFLOW_CACHE": "2", "TICKETFLOW_SDK_METRICS_PORT": str(sdk_port)}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    recorder = StartRecorder()
    config = dev_client.config()
    config["interceptors"] = [recorder]
    tickets = TicketClient(Client(**config), task_queue)
    worker.start()
    try:
        opened = [await tickets.open(ticket(subject=f"cache test {n}")) for n in range(5)]
        states = [await tickets.wait_for(t.ticket_id, Status.OPEN, within=60) for t in opened]
        assert sdk_metric(sdk_port, "temporal_sticky_cache_size") <= 2
        assert sdk_metric(sdk_port, "temporal_sticky_cache_total_forced_eviction") >= 3
        first = await tickets.get(opened[0].ticket_id)  # evicted since: the query replays its history
        # What the opening decided (the acknowledgement mail may have gone out since, changing other fields)
        decided = {"ticket_id", "status", "created_at", "category", "department", "priority", "tier", "queue"}
        assert first.model_dump(include=decided) == states[0].model_dump(include=decided)
        assert first.status == Status.OPEN and first.department and first.created_at
        assert sdk_metric(sdk_port, "temporal_sticky_cache_miss") >= 1
    finally:
        worker.stop()
        await terminate_leftovers(dev_client, recorder.ids)
    assert "Traceback" not in (tmp_path / "worker.log").read_text(errors="replace")
