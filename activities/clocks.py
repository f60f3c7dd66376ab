"""The current state of each SLA clock (`sla_clocks`), kept with its events.

`sla_events` is the clocks' history; reports read it. What is true now (which clocks run, and when each falls due)
would otherwise be a replay of every event of every open ticket, which the backlog's at-risk gauge did at each
read. The audit step applies each event to its clock's row in the same transaction instead, with the due instant
computed once, from the department's calendar, when the clock starts, resumes, reminds or is retargeted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from ticketflow.config import Config
from ticketflow.models import SlaEvent

# One event on its clock's row. A new run of the clock (another clock_started_at: a next reply) replaces the row;
# an event of an older entry than the row's changes nothing, so a replayed or retried step is harmless. "Measured"
# events carry elapsed_seconds at their instant, so while the clock runs they move `since` and the due instant.
_APPLY = """
INSERT INTO sla_clocks AS c (ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds,
                             target_seconds, business, since, due_at)
VALUES (%(ticket_id)s, %(metric)s, %(clock_started_at)s, %(seq)s,
        %(event)s::text IN ('started', 'resumed'),
        %(event)s::text IN ('fulfilled', 'breached'),
        %(elapsed_seconds)s, %(target_seconds)s, %(business)s,
        CASE WHEN %(event)s::text IN ('started', 'resumed') THEN %(at)s::timestamptz END,
        CASE WHEN %(event)s::text IN ('started', 'resumed') THEN %(due_at)s::timestamptz END)
ON CONFLICT (ticket_id, metric) DO UPDATE SET
    clock_started_at = EXCLUDED.clock_started_at,
    seq = EXCLUDED.seq,
    running = CASE WHEN c.clock_started_at <> EXCLUDED.clock_started_at
                        OR %(event)s::text IN ('started', 'resumed', 'paused') THEN EXCLUDED.running
                   ELSE c.running END,
    done = CASE WHEN c.clock_started_at <> EXCLUDED.clock_started_at THEN EXCLUDED.done
                ELSE c.done OR EXCLUDED.done END,
    elapsed_seconds = EXCLUDED.elapsed_seconds,
    target_seconds = EXCLUDED.target_seconds,
    business = EXCLUDED.business,
    since = CASE WHEN c.clock_started_at <> EXCLUDED.clock_started_at
                      OR %(event)s::text IN ('started', 'resumed') THEN EXCLUDED.since
                 WHEN %(event)s::text IN ('reminder', 'retargeted') AND c.running THEN %(at)s::timestamptz
                 WHEN %(event)s::text = 'paused' THEN NULL
                 ELSE c.since END,
    due_at = CASE WHEN c.clock_started_at <> EXCLUDED.clock_started_at
                       OR %(event)s::text IN ('started', 'resumed') THEN EXCLUDED.due_at
                  WHEN %(event)s::text IN ('reminder', 'retargeted') AND c.running AND NOT c.done
                       THEN %(due_at)s::timestamptz
                  WHEN %(event)s::text IN ('paused', 'fulfilled', 'breached') THEN NULL
                  ELSE c.due_at END
WHERE (c.clock_started_at, c.seq) <= (EXCLUDED.clock_started_at, EXCLUDED.seq)
"""


def clock_rows(
    ticket_id: str, seq: int, at: datetime, events: Iterable[SlaEvent], department: str, config: Config
) -> list[dict[str, Any]]:
    """The parameters of _APPLY for an entry's SLA events (tier budgets are not SLAs: they are left out)."""
    return [
        {
            "ticket_id": ticket_id,
            "seq": seq,
            "at": at,
            "metric": e.metric,
            "clock_started_at": e.clock_started_at,
            "event": e.event,
            "elapsed_seconds": e.elapsed_seconds,
            "target_seconds": e.target_seconds,
            "business": e.business,
            "due_at": config.clock_due(department, at, e.target_seconds - e.elapsed_seconds, e.business),
        }
        for e in events
        if e.metric != "tier"
    ]


async def apply(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> None:
    """Apply events, in order, in the caller's transaction (one round trip: psycopg pipelines executemany)."""
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(_APPLY, rows)


async def fill_dues(conninfo: str, config: Config) -> int:
    """Give a due instant to the running business-hours clocks that have none: those migration 0009 carried over
    from their events, since only the policy knows their calendar. Idempotent, and cheap once done (the partial
    index finds no row); a clock that moved on meanwhile is left to the event that moved it."""
    async with await AsyncConnection.connect(conninfo) as conn, conn.transaction():
        return await _fill_dues(conn, config)


async def _fill_dues(conn: AsyncConnection[Any], config: Config, tickets: list[str] | None = None) -> int:
    cur = await conn.execute(
        "SELECT c.ticket_id, c.metric, c.seq, c.since, c.target_seconds - c.elapsed_seconds, c.business,"
        " coalesce(t.department, '') FROM sla_clocks c JOIN tickets t ON t.id = c.ticket_id"
        " WHERE c.running AND NOT c.done AND c.due_at IS NULL AND c.since IS NOT NULL"
        + ("" if tickets is None else " AND c.ticket_id = ANY(%s)"),
        () if tickets is None else (tickets,),
    )
    params = [
        (config.clock_due(dept, since, left, business), ticket_id, metric, seq)
        for ticket_id, metric, seq, since, left, business, dept in await cur.fetchall()
    ]
    if params:
        async with conn.cursor() as update:
            await update.executemany(
                "UPDATE sla_clocks SET due_at = %s WHERE ticket_id = %s AND metric = %s AND seq = %s"
                " AND due_at IS NULL",
                params,
            )
    return len(params)


# The rows of some tickets rebuilt from all their events (the view of migration 0010). An audit step that applied a
# later entry meanwhile wins (the guard of _APPLY; at the same entry the rebuild, which has every event, wins), and
# the clock is then left for the next round. RETURNING: the clocks rebuilt. (`ticket_id = ANY` is what reaches into
# the view; the pairs then pick the clocks with unapplied events.)
_REBUILD = """
INSERT INTO sla_clocks AS c (ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds,
                             target_seconds, business, since, due_at)
SELECT ticket_id, metric, clock_started_at, seq, running, done, elapsed_seconds, target_seconds, business, since,
       due_at
FROM sla_clock_rebuild
WHERE ticket_id = ANY(%(tickets)s)
  AND (ticket_id, metric) IN (SELECT * FROM unnest(%(tickets_of)s::text[], %(metrics)s::text[]))
ON CONFLICT (ticket_id, metric) DO UPDATE SET
    clock_started_at = EXCLUDED.clock_started_at, seq = EXCLUDED.seq, running = EXCLUDED.running,
    done = EXCLUDED.done, elapsed_seconds = EXCLUDED.elapsed_seconds, target_seconds = EXCLUDED.target_seconds,
    business = EXCLUDED.business, since = EXCLUDED.since, due_at = EXCLUDED.due_at
WHERE (c.clock_started_at, c.seq) <= (EXCLUDED.clock_started_at, EXCLUDED.seq)
RETURNING ticket_id, metric
"""

RECONCILE_BATCH = 500  # tickets per transaction
# The tickets with events no clock row has: the partial index of migration 0010, empty but for a rolling upgrade.
_UNAPPLIED = "SELECT DISTINCT ticket_id FROM sla_events WHERE NOT clock_applied AND metric <> 'tier' LIMIT %s"


async def reconcile(conninfo: str, config: Config) -> int:
    """Apply to their clocks' rows the events that a worker of a release before 0009 wrote without them (a rolling
    upgrade), due instants included. Each worker runs it at its start and every `clock_reconcile_seconds`; without
    old workers it reads an empty index. Returns the clocks rebuilt."""
    rebuilt = 0
    async with await AsyncConnection.connect(conninfo) as conn:
        while True:
            async with conn.transaction():
                cur = await conn.execute(_UNAPPLIED, (RECONCILE_BATCH,))
                tickets = [r[0] for r in await cur.fetchall()]
                if not tickets:
                    break
                # Lock the rows first: an audit step of these tickets waits, and the statements below see what it
                # committed before. The events to mark are read before the rebuild, which sees them all.
                await conn.execute(
                    "SELECT 1 FROM sla_clocks WHERE ticket_id = ANY(%s) ORDER BY ticket_id, metric FOR UPDATE",
                    (tickets,),
                )
                cur = await conn.execute(
                    "SELECT ticket_id, metric, seq, event FROM sla_events WHERE ticket_id = ANY(%s)"
                    " AND NOT clock_applied AND metric <> 'tier' FOR UPDATE",
                    (tickets,),
                )
                unapplied = await cur.fetchall()
                pairs = sorted({(r[0], r[1]) for r in unapplied})
                cur = await conn.execute(
                    _REBUILD,
                    {"tickets": tickets, "tickets_of": [t for t, _ in pairs], "metrics": [m for _, m in pairs]},
                )
                written = {(r[0], r[1]) for r in await cur.fetchall()}
                marks = [r for r in unapplied if (r[0], r[1]) in written]
                if marks:
                    async with conn.cursor() as mark:
                        await mark.executemany(
                            "UPDATE sla_events SET clock_applied = true"
                            " WHERE ticket_id = %s AND metric = %s AND seq = %s AND event = %s",
                            marks,
                        )
                await _fill_dues(conn, config, tickets)  # the business-hours ones, before anyone reads them
                rebuilt += len(written)
                if len(written) < len(pairs):
                    break  # an audit step moved a clock on meanwhile: the next round has its entry too
    return rebuilt
