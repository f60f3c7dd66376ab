"""Business metrics (prometheus-client), emitted only by activities and only after the database
has committed a first write: an activity retry or a workflow replay finds the row already there
and counts nothing, so the counters agree with the rows in PostgreSQL.

Labels carry department keys, priorities, tiers and agent ids, never customer data.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from typing import Self

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


class Tally:
    """Metric updates held back until the surrounding transaction has committed."""

    def __init__(self) -> None:
        self._pending: list[Callable[[], None]] = []

    def inc(self, counter: Counter, **labels: str | int) -> Self:
        child = counter.labels(**{k: str(v) for k, v in labels.items()})
        self._pending.append(child.inc)
        return self

    def observe(self, histogram: Histogram, value: float, **labels: str | int) -> Self:
        child = histogram.labels(**{k: str(v) for k, v in labels.items()})
        self._pending.append(lambda: child.observe(value))
        return self

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for update in pending:
            update()


def initialise(config: Config, templates: list[str]) -> None:
    """Create every bounded label combination at zero when a worker starts.

    Prometheus's increase() takes a series' first sample as its baseline, so a series born with its
    first event already counted would hide that event from every dashboard. Ticket counters keep
    their channel and category labels unset until used (too many combinations to create up front)."""
    tiers = [t.level for t in config.tiers]
    moves = [(a, b) for a in tiers for b in tiers if abs(a - b) == 1]
    for dept_key, dept in config.departments.items():
        CSAT_SURVEYS.labels(department=dept_key)
        CSAT_CHANGED.labels(department=dept_key)
        for tier in tiers:
            CSAT_SCORE.labels(department=dept_key, agent="", tier=str(tier))
        for agent in dept.agents:
            for tier in agent.tiers:
                CSAT_SCORE.labels(department=dept_key, agent=agent.id, tier=str(tier))
        for (a, b), cause in product(moves, ("timer", "breach", "manual")):
            ESCALATIONS.labels(department=dept_key, from_tier=str(a), to_tier=str(b), cause=cause)
        for priority in Priority:
            p = str(priority)
            for time in ("business", "calendar"):
                FIRST_RESPONSE.labels(department=dept_key, priority=p, time=time)
                RESOLUTION.labels(department=dept_key, priority=p, time=time)
            for metric, event in product(("first_response", "next_reply", "resolution"), SLA_OUTCOMES):
                SLA_EVENTS.labels(metric=metric, event=event, department=dept_key, priority=p)
    for template, outcome in product(templates, ("sent", "refused", "transient")):
        NOTIFICATIONS.labels(template=template, outcome=outcome)
