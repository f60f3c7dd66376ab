"""Load for the benchmarks: realistic tickets (the demo's multilingual samples), submitted at a paced rate or
as fast as a bounded number of callers can, and the moments each reached "routed" and "acknowledged", read
afterwards from PostgreSQL so that watching costs the measured system nothing while it runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from temporalio.client import Client

from bench.common import rate, summary
from bench.floor import FLOOR_WORKFLOW
from starter.client import TicketClient
from starter.demo import demo_tickets
from ticketflow.ids import ticket_id_for
from ticketflow.models import TicketIn

RUN = uuid.uuid4().hex[:6]


def tickets(n: int, label: str, seed: int = 7) -> list[dict[str, Any]]:
    """n demo tickets, unique to this run and label: each customer writes once (a first-time customer)."""
    out = demo_tickets(n, seed)
    for i, t in enumerate(out):
        t["external_message_id"] = f"<bench-{RUN}-{label}-{i}@bench.example>"
        t["customer"]["email"] = f"{label}-{i}.{RUN}@example.com"
        t["tags"] = ["bench"]
    return out


def key_of(ticket: dict[str, Any]) -> str:
    return ticket_id_for(ticket["external_message_id"])


@dataclass
class Submitted:
    key: str  # ticket id, or the floor workflow's id
    at: float  # wall clock (time.time()) when the start was sent
    returned: float = 0.0
    error: str | None = None


Submit = Callable[[dict[str, Any]], Awaitable[str]]


async def submit_all(
    items: Sequence[dict[str, Any]], submit: Submit, *, rate: float | None, concurrency: int
) -> list[Submitted]:
    """Open-loop at `rate` per second (at most `concurrency` in flight, so an overload cannot pile up without
    bound), or closed-loop with `concurrency` callers when rate is None."""
    gate = asyncio.Semaphore(concurrency)
    out: list[Submitted] = []

    async def one(item: dict[str, Any]) -> None:
        s = Submitted(key="", at=time.time())
        out.append(s)
        try:
            s.key = await submit(item)
        except Exception as err:  # counted and shown, never silently lost
            s.error = f"{type(err).__name__}: {err}"
        finally:
            s.returned = time.time()
            gate.release()

    tasks = []
    t0 = time.monotonic()
    for i, item in enumerate(items):
        if rate:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.create_task(one(item)))
    await asyncio.gather(*tasks)
    return out


def sdk_submitter(tickets_client: TicketClient) -> Submit:
    """The product's intake path: TicketClient.open (validation, start, and its duplicate check)."""

    async def submit(item: dict[str, Any]) -> str:
        opened = await tickets_client.open(item)
        return opened.ticket_id

    return submit


def floor_submitter(client: Client, task_queue: str, label: str, workflow: str = FLOOR_WORKFLOW) -> Submit:
    """A floor (bench/floor.py), started with the same ticket payload as input."""
    counter = iter(range(10**9))

    async def submit(item: dict[str, Any]) -> str:
        wid = f"floor-{RUN}-{label}-{next(counter)}"
        valid = TicketIn.model_validate(item)
        await client.start_workflow(
            workflow,
            valid.model_dump(mode="json"),
            id=wid,
            task_queue=task_queue,
        )
        return wid

    return submit


# --- observing -----------------------------------------------------------------------------------------------


async def wait_acknowledged(database_url: str, ids: Sequence[str], within: float, poll: float = 0.5) -> int:
    """Until every ticket's acknowledgement is sent (outbox `ack:<id>` status sent); returns how many were."""
    keys = [f"ack:{i}" for i in ids]
    deadline = time.monotonic() + within
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM outbox WHERE key = ANY(%s) AND status = 'sent'", (keys,))
            row = await cur.fetchone()
            done = int(row[0]) if row else 0
            if done >= len(keys) or time.monotonic() > deadline:
                return done
            await asyncio.sleep(poll)


@dataclass
class PipelineTimes:
    routed: dict[str, float]  # ticket id -> when its tier-1 routing decision was written
    acked: dict[str, float]  # ticket id -> when its acknowledgement was handed to the relay


async def pipeline_times(database_url: str, ids: Sequence[str]) -> PipelineTimes:
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
        routed = await (
            await conn.execute(
                "SELECT ticket_id, min(bench_at) AS at FROM routing_decisions"
                " WHERE ticket_id = ANY(%s) AND tier = 1 GROUP BY ticket_id",
                (list(ids),),
            )
        ).fetchall()
        acked = await (
            await conn.execute(
                "SELECT ticket_id, sent_at FROM outbox WHERE key = ANY(%s) AND status = 'sent'",
                ([f"ack:{i}" for i in ids],),
            )
        ).fetchall()
    return PipelineTimes(
        routed={r["ticket_id"]: r["at"].timestamp() for r in routed},
        acked={r["ticket_id"]: r["sent_at"].timestamp() for r in acked},
    )


async def wait_floor(client: Client, ids: Sequence[str], within: float, poll: float = 0.5) -> dict[str, float]:
    """Until every floor workflow has completed; returns workflow id -> close time (the server's)."""
    wanted = set(ids)
    prefix = ids[0].rsplit("-", 1)[0] + "-" if ids else ""
    query = f"ExecutionStatus = 'Completed' AND WorkflowId STARTS_WITH '{prefix}'"  # one batch, either floor
    deadline = time.monotonic() + within
    while True:
        done = (await client.count_workflows(query)).count
        if done >= len(wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(poll)
    closed: dict[str, float] = {}
    async for wf in client.list_workflows(query):
        if wf.id in wanted and wf.close_time is not None:
            closed[wf.id] = wf.close_time.timestamp()
    return closed


def latency(submitted: Sequence[Submitted], reached: dict[str, float]) -> list[float]:
    return [reached[s.key] - s.at for s in submitted if s.key in reached]


def step_figures(
    submitted: Sequence[Submitted], done: dict[str, float], routed: dict[str, float] | None = None
) -> dict[str, Any]:
    """Offered and achieved rates and latencies of one batch. `done` is when each reached the end of what is
    measured (acknowledged, or the floor's close); `routed` adds the submit -> routed latency."""
    ok = [s for s in submitted if s.error is None]
    finished = [done[s.key] for s in ok if s.key in done]
    out: dict[str, Any] = {
        "submitted": len(submitted),
        "errors": len(submitted) - len(ok),
        "completed": len(finished),
        "offered_per_s": rate([s.at for s in submitted]),
        "completed_per_s": rate(finished),
        # the whole batch from its first submit to its last completion: a burst's capacity, ramp-up included
        "makespan_per_s": len(finished) / (max(finished) - min(s.at for s in ok)) if finished else None,
        "submit_call_s": summary([s.returned - s.at for s in ok]),
        "latency_done_s": summary(latency(ok, done)),
    }
    if routed is not None:
        out["latency_routed_s"] = summary(latency(ok, routed))
    first_errors = sorted({s.error for s in submitted if s.error})[:3]
    if first_errors:
        out["error_samples"] = first_errors
    return out
