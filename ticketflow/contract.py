"""Names that cross process boundaries: the workflow type, its messages and the activities.

Workflows refer to activities by these names so the workflow side never imports the activity
side (which holds database and SMTP clients).
"""

from __future__ import annotations

WORKFLOW_TYPE = "TicketWorkflow"

# activities
OPEN_TICKET = "open_ticket"  # intake, categorise, policy, route and `opened` in one transaction
INTAKE = "intake"
CATEGORISE = "categorise"
LOAD_POLICY = "load_policy"
ROUTE = "route"
RECORD_EVENT = "record_event"
RECORD_RATING = "record_rating"
NOTIFY = "notify"
RECORD_AND_NOTIFY = "record_and_notify"  # an entry and its staff notices, one attempt each

# updates and the query
AGENT_REPLY = "agent_reply"
CUSTOMER_REPLY = "customer_reply"
PEND = "pend"
RESOLVE = "resolve"
REOPEN = "reopen"
ESCALATE = "escalate"
RATE = "rate"
CHANGE_PRIORITY = "change_priority"
TRANSFER = "transfer"
REFRESH_POLICY = "refresh_policy"
DEESCALATE = "deescalate"
NOTE = "note"
ASSIGN = "assign"
REPORT_BOUNCE = "report_bounce"  # a delivery status notification about one of the ticket's mails
STATE_QUERY = "state"

# application error types
INVALID_TICKET = "InvalidTicket"
INVALID_TRANSITION = "InvalidTransition"
PERMANENT_DELIVERY = "PermanentDeliveryFailure"
DUPLICATE_MESSAGE = "DuplicateMessage"
AUDIT_DIVERGED = "AuditDiverged"  # an audit number already holds another entry: the run left the logged path
SURVEY_CLOSED = "SurveyClosed"  # an answer for an earlier resolution, or after the survey closed
DUPLICATE_ANSWER = "DuplicateAnswer"  # the same survey form submitted twice
