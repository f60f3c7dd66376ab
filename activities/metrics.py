"""Business metrics (prometheus-client), emitted only by activities and only after the database
has committed a first write: an activity retry or a workflow replay finds the row already there
and counts nothing, so the counters agree with the rows in PostgreSQL.

Labels carry department keys, priorities, tiers and agent ids, never customer data.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from itertools import product
from typing import Any, NamedTuple, Self

from prometheus_client import Counter, Histogram

from ticketflow.config import Config
from ticketflow.models import Priority

# Minutes to weeks: first responses land in the low buckets, resolutions in the high ones.
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600, 604800, 1209600)

TICKETS = Counter(
    "ticketflow_tickets",
    "Ticket lifecycle: created (counted once categorised), resolved, reopened, closed",
    ["event", "channel", "department", "priority", "category"],
)
INTAKE_REJECTED = Counter(
    "ticketflow_intake_rejected",
    "Ticket payloads the intake activity refused (a workflow started without the SDK's checks), by field",
    ["reason"],
)
INTAKE_REQUESTS = Counter(
    "ticketflow_intake_requests",
    "Requests at the HTTP and mail intake by outcome (opened, duplicate, reply, or why it was refused)",
    ["entry", "outcome"],
)
SURVEY_REQUESTS = Counter(
    "ticketflow_survey_requests",
    "Survey page requests by outcome: form_shown, recorded, duplicate, closed, expired, invalid_link, ...",
    ["outcome"],
)
FIRST_RESPONSE = Histogram(
    "ticketflow_first_response_seconds",
    "Time to first agent response: business (the SLA clock's time, pauses excluded) and calendar seconds",
    ["department", "priority", "time"],
    buckets=DURATION_BUCKETS,
)
RESOLUTION = Histogram(
    "ticketflow_resolution_seconds",
    "Time to resolution: business (the SLA clock's time, pauses excluded) and calendar seconds",
    ["department", "priority", "time"],
    buckets=DURATION_BUCKETS,
)
SLA_OUTCOMES = ("reminder", "breached", "met", "fulfilled_late")
SLA_EVENTS = Counter(
    "ticketflow_sla_events",
    "SLA clock outcomes: reminder, breached, met (in time), fulfilled_late (met after a breach)",
    ["metric", "event", "department", "priority"],
)
ESCALATIONS = Counter(
    "ticketflow_escalations",
    "Tier moves (down when to_tier < from_tier) by cause: timer, breach, manual",
    ["department", "from_tier", "to_tier", "cause"],
)
CSAT_SURVEYS = Counter("ticketflow_csat_surveys_sent", "CSAT surveys sent", ["department"])
CSAT_SCORE = Histogram(
    "ticketflow_csat_score",
    "First CSAT answer per resolution (1-5; good/bad map to 5/1), attributed to who resolved the ticket",
    ["department", "agent", "tier"],
    buckets=(1, 2, 3, 4, 5),
)
CSAT_CHANGED = Counter("ticketflow_csat_rating_changes", "CSAT answers changed within the window", ["department"])
NOTIFICATIONS = Counter(
    "ticketflow_notifications",
    "Email delivery attempts by outcome: sent, refused (permanent), transient (retried)",
    ["template", "outcome"],
)


class Birth(NamedTuple):
    after_scrape: int  # the number of the last scrape begun before the series was created
    at: float  # FirstScrape's clock


class FirstScrape:
    """Holds back the counts of a series until a scrape has shown it at zero.

    Prometheus's increase() and rate() take a series' first sample as their baseline, so a series whose
    first scraped value already holds a count hides that count from every dashboard. Ticket counters
    meet new label combinations all the time (a channel and category first seen, or first seen since the
    worker started, or first seen by this one of several workers), too many to create at zero up front.

    Only while this process serves /metrics are counts held: a count on a series that no scrape begun
    after its creation has finished applies when one finishes, or once the series is `max_hold` seconds
    old (nothing scrapes this process: memory stays bounded). With nothing serving (prometheus-client's
    multiprocess files, tests reading the registry) counts apply at once; stopping the server applies
    whatever is held. A second Prometheus scraping the same process may see a count without its zero."""

    def __init__(self, max_hold: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_hold, self._clock = max_hold, clock
        self._lock = threading.Lock()
        self._serving = 0
        self._started = 0  # scrapes begun, numbered from 1
        self._shown = 0  # the highest number of a finished scrape
        self._born: dict[tuple[int, tuple[tuple[str, str], ...]], Birth] = {}
        self._held: list[tuple[Birth, Callable[[], None]]] = []
        self._next_expiry = math.inf  # when the oldest series with a held count turns max_hold old

    def child(self, metric: Counter | Histogram, labels: dict[str, str]) -> tuple[Any, Birth]:
        """The labelled series, and when it was created (after which scrape began, and the clock)."""
        key = (id(metric), tuple(sorted(labels.items())))
        with self._lock:
            born = self._born.setdefault(key, Birth(self._started, self._clock()))
        return metric.labels(**labels), born

    def inc(self, counter: Counter, **labels: str | int) -> None:
        child, born = self.child(counter, {k: str(v) for k, v in labels.items()})
        self._apply(born, child.inc)

    def observe(self, histogram: Histogram, value: float, **labels: str | int) -> None:
        child, born = self.child(histogram, {k: str(v) for k, v in labels.items()})
        self._apply(born, lambda: child.observe(value))

    def _apply(self, born: Birth, update: Callable[[], None]) -> None:
        with self._lock:
            hold = self._serving and self._shown <= born.after_scrape and not self._expired(born)
            if hold:
                self._held.append((born, update))
                self._next_expiry = min(self._next_expiry, born.at + self.max_hold)
            due = self._release(self._expired) if self._clock() >= self._next_expiry else []
        if not hold:
            update()
        for held in due:
            held()

    def _expired(self, born: Birth) -> bool:
        return self._clock() - born.at >= self.max_hold

    def _release(self, ready: Callable[[Birth], bool]) -> list[Callable[[], None]]:
        due = [update for born, update in self._held if ready(born)]
        if due:
            self._held = [(born, update) for born, update in self._held if not ready(born)]
        self._next_expiry = min((born.at + self.max_hold for born, _ in self._held), default=math.inf)
        return due

    def serving(self) -> None:
        with self._lock:
            self._serving += 1

    def stopped(self) -> None:
        with self._lock:
            self._serving -= 1
            due = self._release(lambda _: True) if not self._serving else []
        for update in due:
            update()

    def scrape_begins(self) -> int:
        with self._lock:
            self._started += 1
            return self._started

    def scrape_ends(self, number: int) -> None:
        """Scrape `number` has shown every series created before it began: their held counts apply."""
        with self._lock:
            self._shown = max(self._shown, number)
            due = self._release(lambda born: born.after_scrape < number or self._expired(born))
        for update in due:
            update()


FIRST_SCRAPE = FirstScrape()  # the worker's metrics are module-level, as prometheus-client's registry is
inc = FIRST_SCRAPE.inc
observe = FIRST_SCRAPE.observe


def zero(family: Counter | Histogram, /, **labels: str) -> None:
    """Create a series at zero, so that its first count needs no wait."""
    FIRST_SCRAPE.child(family, labels)


class Tally:
    """Metric updates held back until the surrounding transaction has committed."""

    def __init__(self) -> None:
        self._pending: list[Callable[[], None]] = []

    def inc(self, counter: Counter, **labels: str | int) -> Self:
        self._pending.append(lambda: inc(counter, **labels))
        return self

    def observe(self, histogram: Histogram, value: float, **labels: str | int) -> Self:
        self._pending.append(lambda: observe(histogram, value, **labels))
        return self

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for update in pending:
            update()


def initialise(config: Config, templates: list[str]) -> None:
    """Create every bounded label combination at zero when a worker starts, so that its first count
    needs no wait (FirstScrape). Ticket counters keep their channel and category labels unset until used
    (too many combinations to create up front)."""

    tiers = [t.level for t in config.tiers]
    moves = [(a, b) for a in tiers for b in tiers if abs(a - b) == 1]
    for dept_key, dept in config.departments.items():
        zero(CSAT_SURVEYS, department=dept_key)
        zero(CSAT_CHANGED, department=dept_key)
        for tier in tiers:
            zero(CSAT_SCORE, department=dept_key, agent="", tier=str(tier))
        for agent in dept.agents:
            for tier in agent.tiers:
                zero(CSAT_SCORE, department=dept_key, agent=agent.id, tier=str(tier))
        for (a, b), cause in product(moves, ("timer", "breach", "manual")):
            zero(ESCALATIONS, department=dept_key, from_tier=str(a), to_tier=str(b), cause=cause)
        for priority in Priority:
            p = str(priority)
            for clock in ("business", "calendar"):
                zero(FIRST_RESPONSE, department=dept_key, priority=p, time=clock)
                zero(RESOLUTION, department=dept_key, priority=p, time=clock)
            for metric, event in product(("first_response", "next_reply", "resolution"), SLA_OUTCOMES):
                zero(SLA_EVENTS, metric=metric, event=event, department=dept_key, priority=p)
    for template, outcome in product(templates, ("sent", "refused", "transient")):
        zero(NOTIFICATIONS, template=template, outcome=outcome)
