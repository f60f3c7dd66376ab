"""Backlog gauges read from PostgreSQL at scrape time.

Counters say what happened; the backlog is what is true now, so it is read, not counted: open
tickets by department, status, tier and priority, the oldest open ticket, and tickets whose SLA
falls due within the hour. One snapshot is cached for a few seconds, so several Prometheus servers
(or a fast scrape interval) cost one set of queries. A database that cannot be read shows as
`ticketflow_backlog_up 0` instead of failing the whole scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

from ticketflow.config import Config
from ticketflow.models import Priority

log = logging.getLogger(__name__)

OPEN = ("new", "open", "pending")
AT_RISK_WITHIN = timedelta(hours=1)

_BY_STATUS = """
SELECT coalesce(department, '') AS department, status, tier, coalesce(priority, '') AS priority, count(*) AS n
FROM tickets WHERE status <> 'closed'
GROUP BY 1, 2, 3, 4
"""
_OLDEST = """
SELECT coalesce(department, '') AS department, min(created_at) AS oldest
FROM tickets WHERE status IN ('new', 'open', 'pending')
GROUP BY 1
"""
_BREACHED = """
SELECT coalesce(department, '') AS department, coalesce(priority, '') AS priority, count(*) AS n
FROM tickets WHERE status IN ('new', 'open', 'pending') AND sla_breached
GROUP BY 1, 2
"""
_QUARANTINED = "SELECT count(*) AS n FROM quarantine WHERE status = 'held'"
# Open tickets with a running SLA clock due by the given instant, each counted once however many clocks it has:
# from sla_clocks' partial index on due_at (activities/clocks.py keeps it with the events).
_AT_RISK = """
SELECT coalesce(t.department, '') AS department, coalesce(t.priority, '') AS priority,
       count(DISTINCT c.ticket_id) AS n
FROM sla_clocks c JOIN tickets t ON t.id = c.ticket_id
WHERE c.running AND NOT c.done AND c.due_at <= %s AND t.status IN ('new', 'open', 'pending')
GROUP BY 1, 2
"""


@dataclass
class Snapshot:
    by_status: list[dict[str, Any]] = field(default_factory=list)
    oldest: dict[str, datetime] = field(default_factory=dict)
    at_risk: dict[tuple[str, str], int] = field(default_factory=dict)
    breached_open: dict[tuple[str, str], int] = field(default_factory=dict)
    quarantined: int = 0
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ok: bool = True


class BacklogCollector(Collector):
    """A prometheus-client collector; register it on the registry the worker serves."""

    def __init__(self, database_url: str, config: Config, ttl_seconds: float = 10.0) -> None:
        self.database_url = database_url
        self.config = config
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        self._cached: Snapshot | None = None
        self._cached_at = 0.0

    def snapshot(self) -> Snapshot:
        with self._lock:  # the metrics server scrapes from several threads
            if self._cached is None or time.monotonic() - self._cached_at > self.ttl:
                self._cached = self._read()
                self._cached_at = time.monotonic()
            return self._cached

    def _read(self) -> Snapshot:
        snap = Snapshot()
        try:
            with psycopg.connect(self.database_url, connect_timeout=3, row_factory=dict_row) as conn:
                conn.execute("SET statement_timeout = '5s'")
                conn.execute("SET default_transaction_read_only = on")
                snap.by_status = conn.execute(_BY_STATUS).fetchall()
                snap.oldest = {r["department"]: r["oldest"] for r in conn.execute(_OLDEST).fetchall()}
                now = datetime.now(UTC)
                snap.taken_at = now
                snap.at_risk = {
                    (r["department"], r["priority"]): r["n"]
                    for r in conn.execute(_AT_RISK, (now + AT_RISK_WITHIN,)).fetchall()
                }
                snap.breached_open = {
                    (r["department"], r["priority"]): r["n"] for r in conn.execute(_BREACHED).fetchall()
                }
                held = conn.execute(_QUARANTINED).fetchone()
                snap.quarantined = held["n"] if held else 0
        except psycopg.Error as err:
            log.warning("backlog gauges unavailable: %s", err)
            snap.ok = False
        return snap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot()
        up = GaugeMetricFamily("ticketflow_backlog_up", "1 when the backlog gauges could be read from PostgreSQL")
        up.add_metric([], 1.0 if snap.ok else 0.0)
        yield up
        if not snap.ok:
            return
        tickets = GaugeMetricFamily(
            "ticketflow_backlog_tickets",
            "Tickets not yet closed, by department, status, tier and priority",
            labels=["department", "status", "tier", "priority"],
        )
        for r in snap.by_status:
            tickets.add_metric([r["department"], r["status"], str(r["tier"]), r["priority"]], r["n"])
        yield tickets
        oldest = GaugeMetricFamily(
            "ticketflow_backlog_oldest_open_seconds",
            "Age of the oldest new, open or pending ticket (0 when there is none)",
            labels=["department"],
        )
        for dept in sorted(set(self.config.departments) | set(snap.oldest)):
            created = snap.oldest.get(dept)
            oldest.add_metric([dept], (snap.taken_at - created).total_seconds() if created else 0.0)
        yield oldest
        # Every department and priority appears, at zero when nothing is at risk, so a dashboard
        # shows a reassuring 0 rather than "no data".
        grid = [(d, str(p)) for d in sorted(self.config.departments) for p in Priority]
        at_risk = GaugeMetricFamily(
            "ticketflow_backlog_at_risk_tickets",
            f"Open tickets with an SLA clock due within {int(AT_RISK_WITHIN.total_seconds() // 60)} minutes",
            labels=["department", "priority"],
        )
        breached = GaugeMetricFamily(
            "ticketflow_backlog_breached_tickets",
            "Open tickets with at least one breached SLA clock",
            labels=["department", "priority"],
        )
        for key in sorted(set(grid) | set(snap.at_risk) | set(snap.breached_open)):
            at_risk.add_metric(list(key), snap.at_risk.get(key, 0))
            breached.add_metric(list(key), snap.breached_open.get(key, 0))
        yield at_risk
        yield breached
        held = GaugeMetricFamily(
            "ticketflow_quarantine_held",
            "Payloads that failed after acceptance and wait for an operator (`ticketflow quarantine list`)",
        )
        held.add_metric([], snap.quarantined)
        yield held
