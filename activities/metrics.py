"""Business metrics. Incremented only when the database confirms a first write, so activity
retries and workflow replays never count twice."""

from __future__ import annotations

from prometheus_client import Counter

TICKETS_CREATED = Counter("ticketflow_tickets_created", "Tickets accepted at intake", ["channel", "customer_type"])
INTAKE_REJECTED = Counter("ticketflow_intake_rejected", "Ticket payloads rejected at intake", ["field"])
TICKET_EVENTS = Counter(
    "ticketflow_ticket_events",
    "Lifecycle events (resolved, reopened, escalated, sla_breach, ...) by department and priority",
    ["event", "department", "priority"],
)
NOTIFICATIONS = Counter(
    "ticketflow_notifications", "Emails handed to the SMTP relay or refused", ["template", "outcome"]
)
CSAT_RATINGS = Counter("ticketflow_csat_ratings", "CSAT ratings recorded", ["department", "score"])
