"""The database at scale: generated ticket history in an embedded PostgreSQL, then every hot-path query of the
activities (activities/tickets.py), the department report (`department_report()`, migration 0004, with the
plans of the statements inside it) and the backlog gauges' queries (activities/backlog.py), each with
EXPLAIN (ANALYZE, BUFFERS) and its median time over repeated runs. A hot-path query that reads a big table
with a Seq Scan is flagged; the run exits 1 if any remains once every migration is applied.

Measured twice: with the schema as it was up to `--before` (migration 0007 by default), then with every later
migration applied (0008_hot_path_indexes adds the indexes this benchmark found missing), so each index shows
its before/after. Rows are generated server-side (generate_series), in proportion per ticket: about 2.2
messages, 7.8 audit entries, 4.9 SLA events, 3.8 mails, 1.1 routing decisions and 0.2 ratings.

    .venv/bin/python -m bench.database --size small       # 2,500 tickets: a check that it runs, under a minute
    .venv/bin/python -m bench.database --tickets 1000000   # 1M tickets (about 21M rows, ~10 GB), 20-40 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from activities import backlog, clocks
from activities.db import migrate, migrations
from bench.common import ROOT, busy_warning, console, fmt, table, write_results
from starter.devstack import EmbeddedPostgres
from ticketflow.config import default_config

SIZES: dict[str, dict[str, Any]] = {
    "small": {"tickets": 2_500, "repeat": 5},  # about 48,000 rows: checks the benchmark, not the plans
    "full": {"tickets": 1_000_000, "repeat": 5},
}
BIG = {"tickets", "messages", "audit_log", "sla_events", "outbox", "routing_decisions", "csat_ratings"}
SOURCE = (ROOT / "activities" / "tickets.py").read_text("utf-8")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--tickets", type=int, help="ticket rows to generate")
    p.add_argument("--repeat", type=int, help="timed runs of each query (the median is reported)")
    p.add_argument("--before", type=int, default=7, help="the last migration of the 'before' schema")
    p.add_argument("--plans", action="store_true", help="print every plan, not only the flagged ones")
    p.add_argument("--keep", type=Path, help="generate into (or reuse) this data folder and keep it")
    args = p.parse_args(argv)
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


# --- data ------------------------------------------------------------------------------------------------

GENERATE = [
    (
        "tickets",
        """
        INSERT INTO tickets (id, external_message_id, channel, subject, body, customer_name, customer_email,
            customer_plan, customer_type, customer_region, customer_language, tags, status, language, category,
            priority, department, tier, queue, assignee, sla_breached, categorisation, created_at,
            first_response_at, resolved_at, closed_at, updated_at)
        SELECT id, '<gen-' || i || '@mail.example.com>', (ARRAY['email','email','email','web_form','chat','phone',
                'social','api'])[1 + i % 8],
               'Ticket subject number ' || i, repeat('A realistic customer message about an order. ', 6),
               'Customer ' || (i % %(customers)s), 'customer' || (i % %(customers)s) || '@example.com',
               (ARRAY['free','team','business','enterprise'])[1 + i % 4],
               (ARRAY['regular','regular','regular','regular','regular','regular','regular','vip','partner',
                      'reseller'])[1 + i % 10],
               (ARRAY['EU','NA','APAC','LATAM'])[1 + i % 4], NULL, '{}',
               status, (ARRAY['en','de','es','fr','pt','el','ru','ro'])[1 + i % 8], 'general',
               (ARRAY['low','normal','normal','normal','high','urgent'])[1 + i % 6],
               (%(depts)s::text[])[1 + pick], CASE WHEN r2 < 0.9 THEN 1 WHEN r2 < 0.97 THEN 2 ELSE 3 END,
               (%(depts)s::text[])[1 + pick] || ':t1', (%(agents)s::text[])[1 + pick], r2 > 0.92,
               '{"category": "general"}'::jsonb, created,
               CASE WHEN status <> 'new' THEN created + interval '1 minute' * (10 + r2 * 470) END,
               CASE WHEN status IN ('resolved','closed') THEN created + interval '1 hour' * (1 + r2 * 119) END,
               CASE WHEN status = 'closed' THEN created + interval '1 hour' * (1 + r2 * 119) + interval '7 days' END,
               created
        FROM (
            SELECT i, substr(md5(i::text), 1, 12) AS id, r2, pick,
                   CASE WHEN r < 0.02 THEN 'new' WHEN r < 0.05 THEN 'open' WHEN r < 0.065 THEN 'pending'
                        WHEN r < 0.08 THEN 'resolved' ELSE 'closed' END AS status,
                   CASE WHEN r < 0.08 THEN now() - interval '1 day' * (r * 150)
                        ELSE now() - interval '8 days' - interval '1 day' * (r * 365) END AS created
            FROM (SELECT i, random() AS r, random() AS r2, floor(random() * %(pairs)s)::int AS pick
                  FROM generate_series(1, %(n)s) AS i) AS raw
        ) AS g
        ORDER BY id
        """,
    ),
    (
        "messages",
        """
        INSERT INTO messages (ticket_id, seq, author_kind, author, body, created_at)
        SELECT t.id, m.seq, m.kind, CASE WHEN m.kind = 'agent' THEN coalesce(t.assignee, 'anna') ELSE 'customer' END,
               'Message ' || m.seq || ' of this ticket, as written by its author, with some detail.',
               t.created_at + interval '1 minute' * m.seq * 37
        FROM tickets t
        CROSS JOIN LATERAL (VALUES (1, 'customer', true), (5, 'agent', t.first_response_at IS NOT NULL),
                                   (8, 'customer', t.first_response_at IS NOT NULL AND t.tier > 1 OR t.sla_breached),
                                   (9, 'agent', t.resolved_at IS NOT NULL AND (t.tier > 1 OR t.sla_breached)),
                                   (10, 'note', t.tier > 2)) AS m(seq, kind, present)
        WHERE m.present
        ORDER BY t.id, m.seq
        """,
    ),
    (
        "audit_log",
        """
        INSERT INTO audit_log (ticket_id, seq, event, actor, detail, at)
        SELECT t.id, e.seq, e.event, e.actor, e.detail, t.created_at + interval '1 minute' * e.seq * 37
        FROM tickets t
        CROSS JOIN LATERAL (VALUES
            (1, 'created', 'customer', '{"channel": "email"}'::jsonb, true),
            (2, 'categorised', 'rules', '{"category": "general", "reasons": ["rule matched"]}'::jsonb, true),
            (3, 'routed', 'router', '{"tier": 1, "reason": "round-robin 1/3"}'::jsonb, t.status <> 'new'),
            (4, 'opened', 'system', '{"status": "open"}'::jsonb, t.status <> 'new'),
            (5, 'agent_reply', 'anna', '{"pend": false}'::jsonb, t.first_response_at IS NOT NULL),
            (6, 'sla_reminder', 'system', '{"metric": "resolution", "fraction": 0.5}'::jsonb, t.sla_breached),
            (7, 'resolved', 'anna', '{"n": 1}'::jsonb, t.resolved_at IS NOT NULL),
            (8, 'survey_sent', 'system', '{"resolution": 1}'::jsonb, t.resolved_at IS NOT NULL),
            (9, 'closed', 'system', '{}'::jsonb, t.status = 'closed')) AS e(seq, event, actor, detail, present)
        WHERE e.present
        ORDER BY t.id, e.seq
        """,
    ),
    (
        "sla_events",
        """
        INSERT INTO sla_events (ticket_id, seq, metric, clock_started_at, event, elapsed_seconds, target_seconds,
            business, fraction, department, priority, at)
        SELECT t.id, e.seq, e.metric, t.created_at, e.event, e.elapsed, e.target, true, NULL, t.department,
               t.priority, t.created_at + interval '1 second' * e.elapsed
        FROM tickets t
        CROSS JOIN LATERAL (VALUES
            (4, 'first_response', 'started', 0.0, 14400, t.status <> 'new'),
            (4, 'resolution', 'started', 0.0, 86400, t.status <> 'new'),
            (5, 'first_response', 'fulfilled', 3000.0, 14400, t.first_response_at IS NOT NULL),
            (6, 'resolution', 'breached', 86400.0, 86400, t.sla_breached),
            (7, 'resolution', 'fulfilled', 40000.0, 86400, t.resolved_at IS NOT NULL),
            (7, 'tier', 'fulfilled', 40000.0, 28800, t.resolved_at IS NOT NULL))
            AS e(seq, metric, event, elapsed, target, present)
        WHERE e.present
        ORDER BY t.id, e.seq
        """,
    ),
    (
        "outbox",
        """
        INSERT INTO outbox (key, ticket_id, template, recipient, sender, subject, body_text, body_html, message_id,
            status, attempts, created_at, sent_at)
        SELECT o.key, t.id, o.template, t.customer_email, 'support@northwind.example',
               '[#' || t.id || '] ' || t.subject, repeat('Dear customer, thank you for your message. ', 7),
               '<p>' || repeat('Dear customer, thank you for your message. ', 7) || '</p>',
               '<' || replace(o.key, ':', '.') || '@ticketflow>', 'sent', 1, t.created_at, t.created_at
        FROM tickets t
        CROSS JOIN LATERAL (VALUES
            ('ack:' || t.id, 'acknowledgement', t.status <> 'new'),
            ('agent_reply:' || t.id || ':5:customer', 'agent_reply', t.first_response_at IS NOT NULL),
            ('resolved:' || t.id || ':1', 'resolved', t.resolved_at IS NOT NULL),
            ('csat:' || t.id || ':1', 'survey', t.status = 'closed')) AS o(key, template, present)
        WHERE o.present
        ORDER BY o.key
        """,
    ),
    (
        "routing_decisions",
        """
        INSERT INTO routing_decisions (ticket_id, step, department, tier, queue, agent, reason, at)
        SELECT t.id, 'route:' || r.step, t.department, r.tier, t.department || ':t' || r.tier, t.assignee,
               'round-robin 1/3 in queue', t.created_at
        FROM tickets t
        CROSS JOIN LATERAL (VALUES (3, 1, t.status <> 'new'), (12, 2, t.tier > 1)) AS r(step, tier, present)
        WHERE r.present
        ORDER BY t.id
        """,
    ),
    (
        "csat_ratings",
        """
        INSERT INTO csat_ratings (ticket_id, resolution, score, raw, agent, tier, department, rated_at, via)
        SELECT t.id, 1, 1 + abs(hashtext(t.id)) % 5, (1 + abs(hashtext(t.id)) % 5)::text, t.assignee, t.tier,
               t.department, t.resolved_at + interval '2 hours', 'survey'
        FROM tickets t
        WHERE t.resolved_at IS NOT NULL AND abs(hashtext(t.id)) % 4 = 0
        """,
    ),
    (
        "quarantine",
        """
        INSERT INTO quarantine (source, ref, payload, error, status)
        SELECT 'workflow', 'ticket-gen' || i || '/run', '{}', 'customer.email: value is not a valid email address',
               CASE WHEN i % 5 = 0 THEN 'held' ELSE 'discarded' END
        FROM generate_series(1, greatest(10, %(n)s / 10000)) AS i
        """,
    ),
]


def generate(url: str, n: int) -> dict[str, Any]:
    cfg = default_config()
    pairs = [(d, a.id) for d, dept in cfg.departments.items() for a in dept.agents_for(1)]
    params = {
        "n": n,
        "customers": max(1, n // 3),
        "pairs": len(pairs),
        "depts": [d for d, _ in pairs],
        "agents": [a for _, a in pairs],
    }
    counts: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name, sql in GENERATE:
            t0 = time.perf_counter()
            # modulo is %% where the statement has parameters
            cur = conn.execute(sql.replace(" % ", " %% ").encode(), params)
            counts[name] = {"rows": cur.rowcount, "seconds": round(time.perf_counter() - t0, 1)}
            console.log(f"{name}: {cur.rowcount:,} rows in {counts[name]['seconds']} s")
        conn.execute(
            "INSERT INTO queue_cursors (queue, next_index) SELECT DISTINCT queue, 0 FROM routing_decisions"
            " ON CONFLICT DO NOTHING"
        )
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        counts["vacuum_analyze_seconds"] = round(time.perf_counter() - t0, 1)
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        counts["database_bytes"] = size[0] if size else None
    return counts


# --- the queries -------------------------------------------------------------------------------------------


@dataclass
class Sample:
    open_id: str
    open_created: datetime
    email: str
    agents: list[str]
    resolved_id: str


@dataclass
class Query:
    name: str
    sql: str
    params: Callable[[Sample], tuple[Any, ...] | dict[str, Any]]
    kind: str = "hot path"  # hot path | report | backlog
    write: bool = False  # run in a transaction that is rolled back
    from_source: bool = True  # the text must still appear in activities/tickets.py
    new: bool = False  # a statement of a later migration's table: not measured before


def _squash(text: str) -> str:
    return " ".join(text.replace('"', " ").split())


def _source_text(sql: str) -> bool:
    """Whether the query still appears in activities/tickets.py (string literals joined, whitespace ignored)."""
    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', SOURCE)
    flat = _squash(" ".join(literals)) + " " + _squash(SOURCE)
    return _squash(sql) in flat


NEW_ID = "benchnewtckt"
HOT: list[Query] = [
    Query(
        "intake: insert the ticket",
        """INSERT INTO tickets (id, external_message_id, channel, subject, body, customer_name,
                    customer_email, customer_phone, customer_plan, customer_type, customer_region,
                    customer_language, attachments, tags, created_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO NOTHING
                RETURNING *""",
        lambda s: (
            NEW_ID,
            "<new@bench>",
            "email",
            "s",
            "b",
            "n",
            "new@example.com",
            None,
            None,
            "regular",
            None,
            None,
            "[]",
            [],
            s.open_created,
        ),
        write=True,
    ),
    Query(
        "intake: insert its first message",
        "INSERT INTO messages (ticket_id, seq, author_kind, author, body, external_message_id, created_at) VALUES "
        "(%s, %s, 'customer', 'customer', %s, %s, %s)",
        lambda s: (s.open_id, 99, "b", None, s.open_created),
        write=True,
        from_source=False,
    ),
    Query("intake: created_at of a ticket", "SELECT created_at FROM tickets WHERE id = %s", lambda s: (s.open_id,)),
    Query("every step: the ticket row", "SELECT * FROM tickets WHERE id = %s", lambda s: (s.open_id,)),
    Query(
        "categorise: first ticket of this customer? (new customer)",
        "SELECT 1 FROM tickets WHERE customer_email = %s AND id <> %s AND created_at <= %s LIMIT 1",
        lambda s: ("never-seen-before@example.com", NEW_ID, s.open_created),
    ),
    Query(
        "categorise: first ticket of this customer? (returning)",
        "SELECT 1 FROM tickets WHERE customer_email = %s AND id <> %s AND created_at <= %s LIMIT 1",
        lambda s: (s.email, s.open_id, s.open_created),
    ),
    Query(
        "route: the decision already taken",
        "SELECT department, tier, queue, agent, reason FROM routing_decisions WHERE ticket_id = %s AND step = %s",
        lambda s: (s.open_id, "route:3"),
    ),
    Query(
        "audit: an SLA event on its clock's row (activities/clocks.py)",
        clocks._APPLY,
        lambda s: {
            "ticket_id": s.open_id,
            "metric": "resolution",
            "clock_started_at": s.open_created,
            "seq": 99,
            "event": "reminder",
            "elapsed_seconds": 600.0,
            "target_seconds": 86400,
            "business": True,
            "at": s.open_created,
            "due_at": s.open_created,
        },
        write=True,
        from_source=False,
        new=True,
    ),
    Query(
        "route: round-robin cursor",
        "INSERT INTO queue_cursors (queue, next_index) VALUES (%s, 1) ON CONFLICT (queue) DO UPDATE SET next_index ="
        " queue_cursors.next_index + 1 RETURNING next_index - 1 AS idx",
        lambda s: ("technical_support:t1",),
        write=True,
    ),
    Query(
        "route: open tickets per agent, counted (before 0011)",
        "SELECT assignee, count(*) AS n FROM tickets WHERE assignee = ANY(%s) AND status IN ('new', 'open', 'pending')"
        " AND id <> %s GROUP BY assignee",
        lambda s: (s.agents, s.open_id),
        from_source=False,  # grows with the open tickets: 27 ms at 50,000 open (bench.scale)
    ),
    Query(
        "route: open tickets per agent (least loaded, skills)",
        "SELECT agent, open FROM agent_open_tickets WHERE agent = ANY(%s)",
        lambda s: (s.agents,),
        new=True,  # migration 0011: kept by a trigger on tickets
    ),
    Query(
        "route: record the decision",
        "INSERT INTO routing_decisions (ticket_id, step, department, tier, queue, agent, reason, at) VALUES (%s, %s,"
        " %s, %s, %s, %s, %s, %s)",
        lambda s: (s.open_id, "route:99", "billing", 1, "billing:t1", "james", "r", s.open_created),
        write=True,
    ),
    Query(
        "audit: append an entry",
        "INSERT INTO audit_log (ticket_id, seq, event, actor, detail, at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT"
        " (ticket_id, seq) DO NOTHING",
        lambda s: (s.open_id, 99, "opened", "system", "{}", s.open_created),
        write=True,
    ),
    Query(
        "audit: apply its ticket update",
        "UPDATE tickets SET status = %s, updated_at = now() WHERE id = %s",
        lambda s: ("open", s.open_id),
        write=True,
        from_source=False,  # built from whitelisted columns at run time
    ),
    Query(
        "record_event: SLA events",
        "INSERT INTO sla_events (ticket_id, seq, metric, clock_started_at, event, elapsed_seconds, target_seconds,"
        " business, fraction, department, priority, at, clock_applied)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)",
        lambda s: (
            s.open_id,
            99,
            "first_response",
            s.open_created,
            "reminder",
            1.0,
            10,
            True,
            0.5,
            "billing",
            "normal",
            s.open_created,
        ),
        write=True,
        new=True,  # clock_applied: migration 0010
    ),
    Query(
        "record_event: was this clock breached?",
        "SELECT 1 FROM sla_events WHERE ticket_id = %s AND metric = %s AND clock_started_at = %s AND event = 'breached'"
        " LIMIT 1",
        lambda s: (s.resolved_id, "resolution", s.open_created),
    ),
    Query(
        "record_event: a bounce marks its mail",
        "UPDATE outbox SET status = 'bounced', last_error = %s, failed_at = %s WHERE ticket_id = %s AND message_id = %s"
        " RETURNING template",
        lambda s: ("550", s.open_created, s.resolved_id, f"<ack.{s.resolved_id}@ticketflow>"),
        write=True,
    ),
    Query(
        "record_rating: the rating",
        """INSERT INTO csat_ratings (ticket_id, resolution, score, raw, comment, agent, tier, department,
                        rated_at, reason, via)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (ticket_id, resolution) DO UPDATE SET score = EXCLUDED.score, raw = EXCLUDED.raw,
                        comment = EXCLUDED.comment, rated_at = EXCLUDED.rated_at, reason = EXCLUDED.reason,
                        via = EXCLUDED.via
                    RETURNING (xmax = 0) AS inserted""",
        lambda s: (s.resolved_id, 1, 5, "5", "", "anna", 1, "billing", s.open_created, None, "survey"),
        write=True,
    ),
    Query(
        "notify: the outbox row, locked",
        "SELECT * FROM outbox WHERE key = %s FOR UPDATE",
        lambda s: (f"ack:{s.resolved_id}",),
        write=True,
        from_source=False,  # built from two literals
    ),
    Query(
        "notify: mark the attempt",
        "UPDATE outbox SET interrupted = interrupted + attempt_open::int, attempt_open = true, attempts = attempts + 1"
        " WHERE key = %s",
        lambda s: (f"ack:{s.resolved_id}",),
        write=True,
    ),
    Query(
        "notify: sent",
        "UPDATE outbox SET status = 'sent', attempt_open = false, sent_at = now() WHERE key = %s",
        lambda s: (f"ack:{s.resolved_id}",),
        write=True,
    ),
    Query(
        "notify: the message an agent reply quotes",
        "SELECT author, body FROM messages WHERE ticket_id = %s AND seq = %s",
        lambda s: (s.resolved_id, 5),
    ),
]


def report_queries(now: datetime) -> list[Query]:
    month, week = now - timedelta(days=30), now - timedelta(days=7)
    return [
        Query(
            "report: every department, by week, last 30 days",
            "SELECT * FROM department_report(NULL, 'week', %s, %s, 'Europe/Berlin')",
            lambda s: (month, now),
            kind="report",
            from_source=False,
        ),
        Query(
            "report: billing, by day, last 7 days",
            "SELECT * FROM department_report(ARRAY['billing'], 'day', %s, %s, 'America/New_York')",
            lambda s: (week, now),
            kind="report",
            from_source=False,
        ),
    ]


# The at-risk gauge before migration 0009: every SLA event of every open ticket, sent to the worker, which
# replayed them to find the running clocks and computed each one's due instant (that Python is not timed here).
# Measured after the migrations too, so a run on a reused database still compares the two.
REPLAYED_CLOCKS = """
SELECT e.ticket_id, e.metric, e.clock_started_at, e.event, e.elapsed_seconds, e.target_seconds, e.business, e.at,
       coalesce(t.department, '') AS department, coalesce(t.priority, '') AS priority
FROM tickets t JOIN sla_events e ON e.ticket_id = t.id
WHERE t.status IN ('new', 'open', 'pending') AND e.metric <> 'tier'
ORDER BY e.ticket_id, e.metric, e.clock_started_at, e.seq
"""

BACKLOG = [
    *(
        Query(f"backlog: {name}", sql, lambda s: (), kind="backlog", from_source=False)
        for name, sql in (
            ("tickets by status", backlog._BY_STATUS),
            ("oldest open", backlog._OLDEST),
            ("breached open", backlog._BREACHED),
            ("quarantine held", backlog._QUARANTINED),
        )
    ),
    Query(
        "backlog: at risk (clocks due within the hour)",
        backlog._AT_RISK,
        lambda s: (datetime.now(UTC) + backlog.AT_RISK_WITHIN,),
        kind="backlog",
        from_source=False,
        new=True,
    ),
    Query("backlog: at risk, replayed (before 0009)", REPLAYED_CLOCKS, lambda s: (), kind="backlog", from_source=False),
    # What each worker runs every TICKETFLOW_CLOCK_RECONCILE_SECONDS, and the rebuild of one ticket's clocks: the
    # condition on ticket_id must reach into the view's window (an index scan), or each rebuild reads every event.
    Query(
        "clocks: events no clock row has (reconcile)",
        clocks._UNAPPLIED,
        lambda s: (clocks.RECONCILE_BATCH,),
        kind="backlog",
        from_source=False,
        new=True,
    ),
    Query(
        "clocks: one ticket's clocks rebuilt (reconcile)",
        "SELECT * FROM sla_clock_rebuild WHERE ticket_id = ANY(%s)",
        lambda s: ([s.open_id],),
        kind="backlog",
        from_source=False,
        new=True,
    ),
]


def sample(conn: psycopg.Connection[dict[str, Any]]) -> Sample:
    row = conn.execute(
        "SELECT id, created_at, customer_email, department FROM tickets WHERE status = 'open'"
        " AND department = 'technical_support' ORDER BY id LIMIT 1"
    ).fetchone()
    resolved = conn.execute(
        "SELECT id FROM tickets WHERE status = 'closed' AND sla_breached ORDER BY id LIMIT 1"
    ).fetchone()
    assert row is not None and resolved is not None, "no generated tickets to sample"
    agents = [a.id for a in default_config().departments["technical_support"].agents_for(1)]
    return Sample(row["id"], row["created_at"], row["customer_email"], agents, resolved["id"])


def walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from walk(child)


def seq_scans(plan: dict[str, Any]) -> list[str]:
    return sorted(
        {
            f"{n['Relation Name']} (~{n.get('Actual Rows', n.get('Plan Rows', 0)):,} rows out, "
            f"{n.get('Rows Removed by Filter', 0):,} filtered)"
            for n in walk(plan)
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG
        }
    )


def text_plan(plan: dict[str, Any], depth: int = 0) -> list[str]:
    what = plan["Node Type"]
    if "Relation Name" in plan:
        what += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        what += f" using {plan['Index Name']}"
    lines = [
        f"{'  ' * depth}-> {what}  (rows {plan.get('Actual Rows', '?')}, {plan.get('Actual Total Time', 0):.2f} ms)"
    ]
    for key in ("Index Cond", "Filter", "Recheck Cond"):
        if key in plan:
            lines.append(f"{'  ' * depth}     {key}: {plan[key]}")
    for child in plan.get("Plans", []):
        lines += text_plan(child, depth + 1)
    return lines


def measure(conn: psycopg.Connection[dict[str, Any]], q: Query, s: Sample, repeat: int) -> dict[str, Any]:
    params = q.params(s)
    nested: list[dict[str, Any]] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        start = text.find("{")
        if "plan:" in text and start >= 0:
            nested.append(json.loads(text[start:]))

    if q.kind == "report":  # the statements inside the SQL function, with their own plans
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_analyze = on",
            "auto_explain.log_buffers = on",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_format = 'json'",
            "auto_explain.log_level = 'notice'",
        ):
            conn.execute(f"SET {setting}".encode())
        conn.add_notice_handler(on_notice)
    try:
        with conn.transaction(force_rollback=True):
            explained = conn.execute(
                ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q.sql).encode(),
                params,
            ).fetchone()
    finally:
        if q.kind == "report":
            conn.remove_notice_handler(on_notice)
            conn.execute("SET auto_explain.log_min_duration = -1")
    assert explained is not None
    top = next(iter(explained.values()))[0]
    plan = top["Plan"]
    times = []
    for _ in range(repeat):
        with conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            cur = conn.execute(q.sql.encode(), params)
            if cur.description:
                cur.fetchall()
            times.append(time.perf_counter() - t0)
    inner = [p["Plan"] for p in nested if "Plan" in p and p.get("Query Text", "").strip() != q.sql.strip()]
    scans = seq_scans(plan) + [x for p in inner for x in seq_scans(p)]
    return {
        "name": q.name,
        "kind": q.kind,
        "median_ms": statistics.median(times) * 1000,
        "explain_ms": top.get("Execution Time"),
        "shared_hit": sum(n.get("Shared Hit Blocks", 0) for n in walk(plan)),
        "shared_read": sum(n.get("Shared Read Blocks", 0) for n in walk(plan)),
        "seq_scans": sorted(set(scans)),
        "plan": text_plan(plan) + [line for p in inner for line in ["  (inside the function)", *text_plan(p, 1)]],
        "in_source": _source_text(q.sql) if q.from_source else None,
    }


def measure_all(url: str, repeat: int, label: str, show_plans: bool) -> list[dict[str, Any]]:
    out = []
    with psycopg.connect(url, row_factory=dict_row) as conn:
        s = sample(conn)
        queries = HOT + report_queries(datetime.now().astimezone()) + BACKLOG
        for q in queries:
            if label == "before" and q.new:
                continue
            result = measure(conn, q, s, repeat)
            out.append(result)
            if show_plans or (result["seq_scans"] and q.kind == "hot path"):
                console.print(f"[bold]{label}: {q.name}[/] ({result['median_ms']:.2f} ms)")
                console.print("\n".join(result["plan"]), highlight=False, markup=False)
    return out


def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    busy_warning()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ticketflow-bench-db-"))
    pg = EmbeddedPostgres(folder / "pgdata", keep=args.keep is not None)
    url = pg.start()
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'tickets'").fetchone()
            existing = conn.execute("SELECT count(*) FROM tickets").fetchone() if row and row[0] else None
        later = [name for version, name, _ in migrations() if version > args.before]
        if existing and existing[0]:
            console.log(f"reusing {existing[0]:,} tickets in {folder}")
            generated: dict[str, Any] = {"reused": existing[0]}
            before: list[dict[str, Any]] = []
        else:
            asyncio.run(migrate(url, upto=args.before))
            console.log(f"generating {args.tickets:,} tickets and their history")
            generated = generate(url, args.tickets)
            before = measure_all(url, args.repeat, "before", args.plans) if later else []
        t0 = time.perf_counter()
        applied = asyncio.run(migrate(url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        migrate_s = time.perf_counter() - t0
        if applied:
            console.log(f"applied {', '.join(applied)} in {migrate_s:.1f} s")
        t0 = time.perf_counter()
        filled = asyncio.run(clocks.fill_dues(url, default_config()))
        fill_s = time.perf_counter() - t0
        console.log(f"the worker's start gave {filled:,} business-hours clocks their due instant in {fill_s:.1f} s")
        t0 = time.perf_counter()
        rebuilt = asyncio.run(clocks.reconcile(url, default_config()))
        reconcile_s = time.perf_counter() - t0
        console.log(f"then its reconcile rebuilt {rebuilt:,} clocks in {reconcile_s:.2f} s")
        after = measure_all(url, args.repeat, "after", args.plans)
    finally:
        pg.stop()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    by_name = {r["name"]: r for r in before}
    rows = []
    for r in after:
        b = by_name.get(r["name"])
        flag = "SEQ SCAN " + "; ".join(r["seq_scans"]) if r["seq_scans"] else ""
        if r["in_source"] is False:
            flag += " (text no longer in activities/tickets.py)"
        rows.append(
            [
                r["name"],
                r["kind"],
                fmt(b["median_ms"], 2) if b else "-",
                fmt(r["median_ms"], 2),
                fmt(r["shared_hit"] + r["shared_read"]),
                ("SEQ SCAN " + "; ".join(b["seq_scans"]) if b and b["seq_scans"] else "") or "-",
                flag or "index",
            ]
        )
    table(
        f"database: {args.tickets:,} tickets" + (f", before = migrations up to {args.before:04d}" if before else ""),
        ["query", "kind", "before ms", "after ms", "buffers", "before", "after"],
        rows,
        caption="median of repeated runs; buffers: shared blocks touched (EXPLAIN ANALYZE, after)",
    )
    failing = [r["name"] for r in after if r["kind"] == "hot path" and r["seq_scans"]]
    if failing:
        console.print(f"[red]hot-path queries with a Seq Scan on a big table: {failing}[/]")
    stale = [r["name"] for r in after if r["in_source"] is False]
    if stale:
        console.print(
            f"[yellow]queries whose text changed in activities/tickets.py (update bench/database.py): {stale}[/]"
        )
    return (
        {
            "size": args.size,
            "tickets": args.tickets,
            "generated": generated,
            "migrations_after": later,
            "migrate_seconds": migrate_s,
            "fill_dues": {"clocks": filled, "seconds": fill_s},
            "reconcile": {"rebuilt": rebuilt, "seconds": reconcile_s},
            "before": before,
            "after": after,
            "hot_path_seq_scans": failing,
        },
        not failing,
    )


def main(argv: list[str] | None = None) -> None:
    results, ok = run(parse(argv))
    write_results("database", results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
