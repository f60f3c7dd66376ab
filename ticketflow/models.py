"""Pydantic models shared by the client, the workflow and the activities.

Everything that crosses a Temporal boundary is one of these models, so any SDK or the
`temporal` CLI can drive a ticket with plain JSON. The workflow keeps only ids, policy and
time in its state; bodies and customer details live in Postgres.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from ticketflow.calendar import BusinessCalendar, add_business_seconds, business_seconds_between

MAX_SUBJECT = 500
MAX_BODY = 200_000
MAX_ATTACHMENTS = 50


class Channel(StrEnum):
    EMAIL = "email"
    WEB_FORM = "web_form"
    CHAT = "chat"
    PHONE = "phone"
    SOCIAL = "social"
    API = "api"


class CustomerType(StrEnum):
    REGULAR = "regular"
    VIP = "vip"
    PARTNER = "partner"
    RESELLER = "reseller"


class Region(StrEnum):
    NA = "NA"
    EU = "EU"
    APAC = "APAC"
    LATAM = "LATAM"
    MEA = "MEA"


class Priority(StrEnum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]

    def raised(self) -> Priority:
        return _BY_RANK[max(0, self.rank - 1)]


_PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
_BY_RANK = {v: k for k, v in _PRIORITY_RANK.items()}


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REJECTED = "rejected"


Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        """PostgreSQL text refuses NUL: text with one would be accepted here, then never stored."""
        if any(isinstance(t, str) and "\x00" in t for t in (v if isinstance(v, list) else [v])):
            raise ValueError("must not contain NUL (\\x00) characters")
        return v


class Customer(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: EmailStr
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()./-]{5,32}$")] | None = None
    plan: Annotated[str, StringConstraints(max_length=64)] | None = None
    type: CustomerType = CustomerType.REGULAR
    region: Region | None = None
    language: Language | None = None


class Attachment(_Strict):
    """Attachment metadata only; the bytes stay with the channel that received them."""

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: Annotated[str, StringConstraints(pattern=r"^[\w.+-]+/[\w.+-]+$")]
    size_bytes: int = Field(ge=0, le=100 * 1024 * 1024)
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None

    @field_validator("content_type")
    @classmethod
    def _media_type_length(cls, v: str) -> str:
        """RFC 6838 caps a type and a subtype at 127 characters each. A validator, not max_length, so that
        the published JSON Schemas (schemas/) stay as they are."""
        if len(v) > 255:
            raise ValueError("content_type must be at most 255 characters (RFC 6838)")
        return v


class TicketIn(_Strict):
    """What an integration submits to open a ticket."""

    subject: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SUBJECT)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY)]
    customer: Customer
    channel: Channel
    external_message_id: Annotated[str, StringConstraints(min_length=1, max_length=998)] | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    tags: list[Tag] = Field(default_factory=list, max_length=50)

    @field_validator("subject")
    @classmethod
    def _one_line_subject(cls, v: str) -> str:
        if "\n" in v or "\r" in v:
            raise ValueError("subject must be a single line")
        return v


class Categorisation(BaseModel):
    category: str
    department: str
    priority: Priority
    language: str
    spam: bool = False
    reasons: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)  # added by automation rules
    assign: str | None = None  # an agent an automation rule asked for


class Routing(BaseModel):
    department: str
    tier: int
    queue: str
    agent: str | None
    reason: str


class IntakeResult(BaseModel):
    ticket_id: str
    channel: Channel
    customer_type: CustomerType
    created_at: datetime
    already_existed: bool = False


# --- SLA clock -----------------------------------------------------------------------------------


class SlaClock(BaseModel):
    """An SLA (or tier-budget) clock that can pause, counting wall-clock time or, when `business`,
    only the department calendar's open time. All instants are absolute UTC so the clock travels
    through continue-as-new and policy changes unchanged."""

    metric: str
    target_seconds: int
    started_at: datetime
    business: bool = False
    elapsed_before: float = 0.0  # seconds accumulated in earlier running spans
    running_since: datetime | None = None
    reminder_fractions: list[float] = Field(default_factory=list)
    reminders_sent: list[float] = Field(default_factory=list)
    breached: bool = False
    fulfilled_at: datetime | None = None

    def elapsed(self, now: datetime, cal: BusinessCalendar | None = None) -> float:
        if self.running_since is None:
            return self.elapsed_before
        if self.business and cal is not None:
            return self.elapsed_before + business_seconds_between(cal, self.running_since, now)
        return self.elapsed_before + max(0.0, (now - self.running_since).total_seconds())

    def instant_of(self, seconds: float, cal: BusinessCalendar | None = None) -> datetime | None:
        """When the clock reaches `seconds` if it keeps running; None while paused."""
        if self.running_since is None:
            return None
        left = seconds - self.elapsed_before
        if self.business and cal is not None:
            return add_business_seconds(cal, self.running_since, max(0.0, left))
        return self.running_since + timedelta(seconds=left)

    @property
    def active(self) -> bool:
        return self.fulfilled_at is None

    @property
    def paused(self) -> bool:
        return self.active and self.running_since is None

    def due_at(self, cal: BusinessCalendar | None = None) -> datetime | None:
        """When the target is (or was) reached if the clock keeps running; None while paused or met."""
        return self.instant_of(self.target_seconds, cal) if self.active else None

    def pending_thresholds(self) -> list[float]:
        """Fractions of the target still to announce, 1.0 being the breach."""
        out = [f for f in sorted(self.reminder_fractions) if f not in self.reminders_sent and f < 1.0]
        if not self.breached:
            out.append(1.0)
        return out

    def pause(self, now: datetime, cal: BusinessCalendar | None = None) -> None:
        if self.running_since is not None:
            self.elapsed_before = self.elapsed(now, cal)
            self.running_since = None

    def resume(self, now: datetime) -> None:
        if self.running_since is None and self.active:
            self.running_since = now

    def started_event(self) -> SlaEvent:
        return SlaEvent(
            metric=self.metric,
            clock_started_at=self.started_at,
            event="started",
            elapsed_seconds=0.0,
            target_seconds=self.target_seconds,
            business=self.business,
        )


# --- Messages to a live ticket --------------------------------------------------------------------

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_BODY)]
Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class AgentReply(_Strict):
    agent: Actor
    body: Text
    pend: bool = False  # reply and wait on the customer in one step


class CustomerReply(_Strict):
    body: Text
    external_message_id: Annotated[str, StringConstraints(max_length=998)] | None = None


class BounceReport(_Strict):
    """A relay's delivery status notification about a mail of this ticket (from the mail intake)."""

    message_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=998)]
    diagnostic: Reason = ""


class InternalNote(_Strict):
    """A note for colleagues: stored with the ticket, never sent to the customer."""

    agent: Actor
    body: Text


class Assign(_Strict):
    actor: Actor
    agent: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    reason: Reason = ""


class PendRequest(_Strict):
    agent: Actor
    reason: Reason = ""


class ResolveRequest(_Strict):
    agent: Actor
    resolution: Reason = ""


class ReopenRequest(_Strict):
    actor: Actor
    reason: Reason = ""


class ChangePriority(_Strict):
    actor: Actor
    priority: Priority
    reason: Reason = ""


class Transfer(_Strict):
    actor: Actor
    department: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    reason: Reason = ""


class RefreshPolicy(_Strict):
    """Re-read SLA targets and business hours for a live ticket after the policy file changed."""

    actor: Actor
    reason: Reason = ""


class EscalateRequest(_Strict):
    actor: Actor
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class RateRequest(_Strict):
    """A CSAT rating: 1-5, or good/bad (stored as 5/1)."""

    rating: int | str
    comment: Reason = ""
    # A reason for a bad answer (1-2), one of the policy's csat.bad_reasons; checked by the survey pages.
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    # Set by the survey pages: the resolution the link was for, and the form's one-time nonce.
    resolution: int | None = Field(default=None, ge=1)
    nonce: Annotated[str, StringConstraints(max_length=128)] | None = None

    @field_validator("rating", mode="before")
    @classmethod
    def _scale(cls, v: object) -> int | str:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("rating must be 1-5 or 'good'/'bad'")
        if isinstance(v, str) and v.strip().isdecimal():  # not isdigit: int() refuses '²'
            digits = v.strip()
            v = int(digits) if len(digits) <= 3 else 0  # thousands of digits: out of range, too long for int()
        if isinstance(v, str):
            low = v.strip().lower()
            if low not in ("good", "bad"):
                raise ValueError("rating must be 1-5 or 'good'/'bad'")
            return low
        if not 1 <= v <= 5:
            raise ValueError("rating must be between 1 and 5")
        return v

    @property
    def score(self) -> int:
        if isinstance(self.rating, str):
            return 5 if self.rating == "good" else 1
        return self.rating


# --- Workflow input and state ---------------------------------------------------------------------


class TicketWorkflowInput(BaseModel):
    """The start argument. `ticket` stays raw so that bad input reaches the intake activity,
    which rejects it with field-level errors, instead of failing workflow-task decoding."""

    ticket: dict[str, Any] | None = None
    resume: TicketState | None = None
    imported: bool = False  # migrated from another help desk: no acknowledgement to the customer


class Policy(BaseModel):
    """The slice of policy a ticket runs on, fetched by an activity so that a config change
    never alters a running workflow's replay."""

    first_response_seconds: int
    resolution_seconds: int
    reminder_fractions: list[float]
    tier_budget_seconds: dict[int, int]
    csat_delay_seconds: int
    csat_window_seconds: int
    # Added with business hours. The defaults reproduce the calendar-hours behaviour of tickets
    # opened before, whose recorded policy lacks these fields.
    next_reply_seconds: int | None = None
    business: dict[str, bool] = Field(default_factory=dict)  # metric (or "tier") -> counts business time
    calendar: BusinessCalendar | None = None
    pause_when_pending: list[str] = Field(
        default_factory=lambda: ["first_response", "next_reply", "resolution", "tier"]
    )
    notify_out_of_hours: bool = True
    escalate_on_breach: list[str] = Field(default_factory=list)
    departments: list[str] = Field(default_factory=list)  # where a transfer may go
    agents: list[str] = Field(default_factory=list)  # who may be assigned in the ticket's department
    # Added with customer notices in their language (patch "customer-notices").
    csat_reminder_seconds: int | None = None
    pending_reminder_seconds: int | None = None

    def target(self, metric: str) -> int | None:
        return {
            "first_response": self.first_response_seconds,
            "next_reply": self.next_reply_seconds,
            "resolution": self.resolution_seconds,
        }[metric]

    def clock(self, metric: str, target: int, at: datetime, running: bool = True) -> SlaClock:
        """A new clock under this policy (a tier budget gets no reminders)."""
        return SlaClock(
            metric=metric,
            target_seconds=target,
            started_at=at,
            business=self.business.get(metric, False),
            running_since=at if running else None,
            reminder_fractions=self.reminder_fractions if metric != "tier" else [],
        )

    def opening_clocks(self, at: datetime) -> dict[str, SlaClock]:
        """The SLA clocks a ticket opens with. The opening step records them and the workflow keeps
        them, so both take them from here."""
        return {
            "first_response": self.clock("first_response", self.first_response_seconds, at),
            "resolution": self.clock("resolution", self.resolution_seconds, at),
        }


class PolicyRequest(BaseModel):
    department: str
    priority: Priority
    customer_type: CustomerType | None = None


class Escalation(BaseModel):
    from_tier: int
    to_tier: int
    cause: str  # timer | manual
    reason: str
    at: datetime


class Rating(BaseModel):
    score: int
    raw: int | str
    resolution: int
    agent: str | None
    tier: int
    department: str
    at: datetime
    reason: str | None = None
    via: str = "agent"  # agent (CLI/SDK on the customer's behalf), survey (the signed link), mail


class ClockView(BaseModel):
    """One clock as an operator reads it. Elapsed is as of the workflow's last event (`as_of`);
    the due instant does not depend on when it is read."""

    metric: str
    as_of: datetime
    counts: str  # "business hours" or "calendar"
    target_seconds: int
    elapsed_seconds: float
    paused: bool
    due_at: datetime | None
    breached: bool
    met_at: datetime | None
    reminders_sent: list[float]


class TicketState(BaseModel):
    """The whole live state of a ticket: what the query returns and continue-as-new carries."""

    ticket_id: str
    status: Status = Status.NEW
    channel: Channel | None = None
    customer_type: CustomerType | None = None
    created_at: datetime | None = None
    category: str | None = None
    department: str | None = None
    priority: Priority | None = None
    language: str | None = None
    categorisation_reasons: list[str] = Field(default_factory=list)
    tier: int = 1
    queue: str | None = None
    assignee: str | None = None
    tier_clock: SlaClock | None = None
    policy: Policy | None = None
    escalations: list[Escalation] = Field(default_factory=list)
    sla: dict[str, SlaClock] = Field(default_factory=dict)
    sla_breached: bool = False
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolutions: int = 0
    survey_sent_for: int = 0
    survey_due_at: datetime | None = None
    close_at: datetime | None = None
    ratings: list[Rating] = Field(default_factory=list)
    messages: int = 0
    audit_seq: int = 0
    rejection: str | None = None
    sla_v2: bool = False  # business hours, next reply, held notices (patch "sla-business-hours")
    held: list[HeldNotice] = Field(default_factory=list)
    clocks: list[ClockView] = Field(default_factory=list)  # filled in by the state query only
    mail_in_flight: int = 0  # state query only: notices written but not yet handed to the relay
    recent_message_ids: list[str] = Field(default_factory=list)
    # Patch "customer-notices": pending and survey reminders, the reopen notice, signed survey links.
    notices_v3: bool = False
    pending_since: datetime | None = None
    pending_reminded: bool = False
    survey_sent_at: datetime | None = None
    survey_reminded_for: int = 0
    survey_nonces: list[str] = Field(default_factory=list)  # recent form nonces: a replayed POST is refused


# --- Activity inputs --------------------------------------------------------------------------------


class SlaEvent(BaseModel):
    """An SLA clock event, stored with business-time figures for exact reports."""

    metric: str
    clock_started_at: datetime
    event: str  # started | paused | resumed | reminder | breached | fulfilled | retargeted
    elapsed_seconds: float
    target_seconds: int
    business: bool
    fraction: float | None = None


class AuditEntry(BaseModel):
    """One state change: appended to the audit log and, when given, applied to the ticket row."""

    ticket_id: str
    seq: int
    event: str
    actor: str
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)
    message: MessageRecord | None = None
    ticket_update: dict[str, Any] = Field(default_factory=dict)
    sla_events: list[SlaEvent] = Field(default_factory=list)


class MessageRecord(BaseModel):
    author_kind: str  # customer | agent | system
    author: str
    body: str
    external_message_id: str | None = None


AuditEntry.model_rebuild()


class IntakeRequest(BaseModel):
    ticket_id: str
    raw: dict[str, Any]
    received_at: datetime


class OpenRequest(BaseModel):
    """The whole opening of a ticket as one step: intake, categorisation, policy, routing, `opened`, and (since
    "ack-in-open-step") the acknowledgement's outbox row and first delivery attempt."""

    ticket_id: str
    raw: dict[str, Any]
    at: datetime  # workflow time: received, categorised, routed and opened at this instant
    acknowledge: Notification | None = None  # None: imported, or a run from before "ack-in-open-step"


class OpenResult(BaseModel):
    intake: IntakeResult
    categorisation: Categorisation
    policy: Policy | None = None  # None (with routing) when an automation rule marked the ticket spam
    routing: Routing | None = None
    audit_seq: int  # the last audit entry the step wrote
    # The acknowledgement's first attempt. None (from a worker that did not know `acknowledge`) or "pending"
    # (not rendered or not delivered there): the workflow hands it to `notify`.
    acknowledgement: NotificationResult | None = None


class CategoriseRequest(BaseModel):
    ticket_id: str
    seq: int
    at: datetime | None = None  # workflow time of the decision (absent in histories before it was added)


class RouteRequest(BaseModel):
    ticket_id: str
    seq: int
    department: str
    tier: int
    step: str  # stable idempotency step name, e.g. "route:1" or "escalate:2"
    at: datetime
    preferred_agent: str | None = None  # from an automation rule; used when that agent can take the tier


class Notification(BaseModel):
    """A templated email; `key` makes it once-per-ticket in effect (unique in the outbox)."""

    key: str
    ticket_id: str
    template: str
    to: str  # "customer", "assignee", "lead" or an address
    context: dict[str, Any] = Field(default_factory=dict)


class EntryWithNotices(BaseModel):
    """An audit entry and the staff notices it announces, written in one step."""

    entry: AuditEntry
    notes: list[Notification]


class HeldNotice(BaseModel):
    """A staff notice that fell outside the department's business hours, sent when it opens."""

    note: Notification
    release_at: datetime


class NotificationResult(BaseModel):
    key: str
    status: str  # sent | already_sent | no_recipient | failed | pending (left to `notify`)
    recipient: str | None = None
    message_id: str | None = None


class RatingRecord(BaseModel):
    ticket_id: str
    seq: int
    rating: Rating
    comment: str


TicketState.model_rebuild()
TicketWorkflowInput.model_rebuild()
OpenRequest.model_rebuild()
OpenResult.model_rebuild()
