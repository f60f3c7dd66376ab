"""The ticket activities: every side effect of the lifecycle, each idempotent.

Idempotency comes from keys the workflow supplies (ticket id + audit sequence, or a business key
such as `ack:<ticket>`) enforced by primary keys and unique constraints, so a retried or replayed
activity writes nothing twice and sends no email twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import clocks, mail, metrics, quarantine
from activities.backlog import OPEN as OPEN_STATES
from activities.mail import SmtpSettings, Templates

if TYPE_CHECKING:
    from collections.abc import Callable

    from activities.classifier import TicketClassifier
from ticketflow import contract, survey
from ticketflow.assignment import Candidate, choose, on_shift
from ticketflow.calendar import add_business_seconds, is_open, next_opening
from ticketflow.config import Config, Department
from ticketflow.converter import describe_errors, safe_errors
from ticketflow.models import (
    AuditEntry,
    Categorisation,
    CategoriseRequest,
    CustomerType,
    EntryWithNotices,
    IntakeRequest,
    IntakeResult,
    Notification,
    NotificationResult,
    OpenRequest,
    OpenResult,
    Policy,
    PolicyRequest,
    Priority,
    RatingRecord,
    RouteRequest,
    Routing,
    TicketIn,
)
from ticketflow.rules import categorise

log = logging.getLogger(__name__)

# The one delivery attempt made inside a workflow step: short, because the ticket waits for it (a relay that
# is slow or down is `notify`'s to wait for, in the background).
INLINE_SMTP_TIMEOUT = 5.0
# After an inline attempt fails (the relay down, silent or slow), this worker's steps hand their mails straight to
# `notify` for this long instead of each spending up to INLINE_SMTP_TIMEOUT on the same relay. The opening step
# runs inside the ticket's workflow task: without the pause, a relay that drops connections would hold a workflow
# task slot for 5 s per ticket opened, and every other ticket's timers and updates would queue behind them.
INLINE_PAUSE_SECONDS = 30.0

# Columns a workflow step may set on the ticket row (never identity or customer data).
_UPDATABLE = {
    "status",
    "tags",
    "language",
    "category",
    "priority",
    "department",
    "tier",
    "queue",
    "assignee",
    "sla_breached",
    "first_response_at",
    "resolved_at",
    "closed_at",
}


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _seconds(minutes: float | None) -> int | None:
    return None if minutes is None else round(minutes * 60)


@dataclass(frozen=True)
class SurveyLinks:
    """Where the survey pages live and the key that signs their links (TICKETFLOW_SURVEY_*)."""

    base_url: str
    secret: bytes

    def choices(self, ticket_id: str, resolution: int, closes_at: datetime, scale: str) -> dict[str, Any]:
        token = survey.sign(survey.SurveyClaim(ticket_id, resolution, closes_at), self.secret)
        scores = [5, 1] if scale == "good_bad" else [1, 2, 3, 4, 5]
        url = f"{self.base_url.rstrip('/')}/survey/{token}"
        return {"scale": scale, "url": url, "choices": [{"score": n, "url": f"{url}?score={n}"} for n in scores]}


def format_validation_error(err: ValidationError) -> str:
    """One line per field: `customer.email: value is not a valid email address`. Values are never quoted,
    nor is the name of a field the model does not know: the client chose it, it can be anything."""
    return describe_errors(err, whole="(ticket)")


def _rejected_reason(error: dict[str, Any]) -> str:
    """A bounded metric label: a known top-level field, `unknown_field` or `ticket`."""
    first = str(error["loc"][0]) if error["loc"] else ""
    if not first:
        return "ticket"
    return first if first in TicketIn.model_fields and error["type"] != "extra_forbidden" else "unknown_field"


@dataclass(frozen=True)
class Appended:
    """An audit entry newly written, with the ticket row as its update left it (None: it updated nothing)."""

    ticket: dict[str, Any] | None


class TicketActivities:
    """Holds the worker's shared clients; the worker registers its bound methods."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]],
        config: Config,
        smtp: SmtpSettings,
        templates: Templates | None = None,
        classifier: TicketClassifier | None = None,
        survey_links: SurveyLinks | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.smtp = smtp
        self._inline_smtp = replace(smtp, timeout=min(smtp.timeout, INLINE_SMTP_TIMEOUT))
        self._inline_paused_until = 0.0  # on `clock`; see INLINE_PAUSE_SECONDS
        self.clock: Callable[[], float] = time.monotonic
        self.templates = templates or Templates()
        self.classifier = classifier
        self.survey_links = survey_links

    # --- intake ---------------------------------------------------------------------------------

    @activity.defn(name=contract.OPEN_TICKET)
    async def open_ticket(self, req: OpenRequest) -> OpenResult:
        """Intake, categorisation, policy, tier-1 routing and the `opened` entry in one transaction.

        One activity instead of five: one round trip through Temporal (three history events instead of
        fifteen) and one commit. Each part keeps its own idempotency key, so a retry after a commit
        returns what the first attempt decided and writes nothing twice. The first-ticket check of the
        rules sees committed tickets only: two tickets of a new customer opened in the same instant both
        count as their first. The acknowledgement the workflow asks for commits with the rest and gets one
        delivery attempt here, as a reminder's notices do in `record_and_notify`: an opening is then two
        workflow tasks instead of three."""
        ticket = await self._validated(req.raw)
        tally = metrics.Tally()
        ack: tuple[Notification, dict[str, Any] | Exception | None] | None = None  # the note and its outbox row
        async with self.pool.connection() as conn:
            async with conn.transaction():
                # `row`: the ticket as this transaction last wrote it, handed from part to part instead of read
                intake, row = await self._insert_ticket(
                    conn, IntakeRequest(ticket_id=req.ticket_id, raw=req.raw, received_at=req.at), ticket
                )
                cat, row = await self._categorise(
                    conn, CategoriseRequest(ticket_id=req.ticket_id, seq=2, at=req.at), tally, row
                )
                if cat.spam:  # the workflow records the closing: nothing is routed or timed
                    result = OpenResult(intake=intake, categorisation=cat, audit_seq=2)
                else:
                    policy = self._policy(
                        PolicyRequest(
                            department=cat.department, priority=cat.priority, customer_type=intake.customer_type
                        )
                    )
                    routing, row = await self._route(
                        conn,
                        RouteRequest(
                            ticket_id=req.ticket_id,
                            seq=3,
                            department=cat.department,
                            tier=1,
                            step="route:3",
                            at=req.at,
                            preferred_agent=cat.assign,
                        ),
                        row,
                    )
                    opened = AuditEntry(
                        ticket_id=req.ticket_id,
                        seq=4,
                        event="opened",
                        actor="system",
                        at=req.at,
                        detail={"status": "open"},
                        ticket_update={"status": "open"},
                        sla_events=[c.started_event() for c in policy.opening_clocks(req.at).values()],
                    )
                    row = await self._record(conn, opened, tally, row)
                    result = OpenResult(intake=intake, categorisation=cat, policy=policy, routing=routing, audit_seq=4)
                    if req.acknowledge is not None:
                        ack = req.acknowledge, await self._outbox_or_fault(conn, req.acknowledge, row)
            tally.flush()
            if ack is not None:
                [result.acknowledgement] = await self._first_attempts(conn, [ack[0]], [ack[1]])
        return result

    @activity.defn(name=contract.INTAKE)
    async def intake(self, req: IntakeRequest) -> IntakeResult:
        ticket = await self._validated(req.raw)
        async with self.pool.connection() as conn, conn.transaction():
            return (await self._insert_ticket(conn, req, ticket))[0]

    async def _validated(self, raw: dict[str, Any]) -> TicketIn:
        """The ticket, or a non-retryable error naming the quarantine entry that now holds the payload."""
        try:
            return TicketIn.model_validate(raw)
        except ValidationError as err:
            errors = safe_errors(err)
            fields = sorted({_rejected_reason(e) for e in errors})
            message = f"invalid ticket: {format_validation_error(err)}"
            info = activity.info()
            async with self.pool.connection() as conn, conn.transaction():
                entry = await quarantine.hold(
                    conn, "workflow", f"{info.workflow_id}/{info.workflow_run_id}", raw, message
                )
            for f in fields:
                metrics.inc(metrics.INTAKE_REJECTED, reason=f)
            raise ApplicationError(
                f"{message} (kept in quarantine as #{entry}: ticketflow quarantine show {entry})",
                errors,
                type=contract.INVALID_TICKET,
                non_retryable=True,
            ) from None

    async def _insert_ticket(
        self, conn: AsyncConnection[dict[str, Any]], req: IntakeRequest, ticket: TicketIn
    ) -> tuple[IntakeResult, dict[str, Any] | None]:
        """The intake, with the row when this call created it."""
        c = ticket.customer
        cur = await conn.execute(
            """
            INSERT INTO tickets (id, external_message_id, channel, subject, body, customer_name,
                customer_email, customer_phone, customer_plan, customer_type, customer_region,
                customer_language, attachments, tags, created_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO NOTHING
            RETURNING *
            """,
            (
                req.ticket_id,
                ticket.external_message_id,
                ticket.channel,
                ticket.subject,
                ticket.body,
                c.name,
                str(c.email),
                c.phone,
                c.plan,
                c.type,
                c.region,
                c.language,
                Jsonb([a.model_dump() for a in ticket.attachments]),
                ticket.tags,
                req.received_at,
            ),
        )
        created = await cur.fetchone()
        if created is not None:
            await self._audit(
                conn,
                AuditEntry(
                    ticket_id=req.ticket_id,
                    seq=1,
                    event="created",
                    actor="customer",
                    at=req.received_at,
                    detail={"channel": ticket.channel, "external_message_id": ticket.external_message_id},
                ),
            )
            await conn.execute(
                "INSERT INTO messages (ticket_id, seq, author_kind, author, body, external_message_id,"
                " created_at) VALUES (%s, 1, 'customer', 'customer', %s, %s, %s)",
                (req.ticket_id, ticket.body, ticket.external_message_id, req.received_at),
            )
            created_at = created["created_at"]
        else:
            row = await (
                await conn.execute("SELECT created_at FROM tickets WHERE id = %s", (req.ticket_id,))
            ).fetchone()
            assert row is not None
            created_at = row["created_at"]
        intake = IntakeResult(
            ticket_id=req.ticket_id,
            channel=ticket.channel,
            customer_type=c.type,
            created_at=created_at,
            already_existed=created is None,
        )
        return intake, created

    # --- categorisation and routing -----------------------------------------------------------------

    @activity.defn(name=contract.CATEGORISE)
    async def categorise(self, req: CategoriseRequest) -> Categorisation:
        tally = metrics.Tally()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                result, _ = await self._categorise(conn, req, tally)
            tally.flush()
        return result

    async def _categorise(
        self,
        conn: AsyncConnection[dict[str, Any]],
        req: CategoriseRequest,
        tally: metrics.Tally,
        known: dict[str, Any] | None = None,
    ) -> tuple[Categorisation, dict[str, Any]]:
        """The categorisation, and the ticket row after it."""
        row = await self._ticket(conn, req.ticket_id, known)
        if row["categorisation"] is not None:
            # A retry after the first attempt committed (the column is written only with the `categorised`
            # entry, below): the decision already taken, not a new one from rules or a model that may have
            # changed since (a deploy), nor a different first-ticket answer.
            return Categorisation.model_validate(row["categorisation"]), row
        ticket = TicketIn.model_validate(
            {
                "subject": row["subject"],
                "body": row["body"],
                "channel": row["channel"],
                "customer": {
                    "name": row["customer_name"],
                    "email": row["customer_email"],
                    "type": row["customer_type"],
                    "language": row["customer_language"],
                    "region": row["customer_region"],
                    "plan": row["customer_plan"],
                },
            }
        )
        earlier = await (
            await conn.execute(
                "SELECT 1 FROM tickets WHERE customer_email = %s AND id <> %s AND created_at <= %s LIMIT 1",
                (row["customer_email"], req.ticket_id, row["created_at"]),
            )
        ).fetchone()
        prediction = (
            self.classifier.predict(f"{ticket.subject}\n{ticket.body}") if self.classifier is not None else None
        )
        result = categorise(ticket, self.config, prediction, first_time=earlier is None, at=req.at)
        appended = await self._audit(
            conn,
            AuditEntry(
                ticket_id=req.ticket_id,
                seq=req.seq,
                event="categorised",
                actor="rules",
                at=req.at or datetime.now(UTC),
                detail=result.model_dump(mode="json"),
                ticket_update={
                    "category": result.category,
                    "priority": result.priority,
                    "language": result.language,
                    "department": result.department,
                    "tags": list(dict.fromkeys([*row["tags"], *result.tags])),
                },
            ),
            extra={"categorisation": Jsonb(result.model_dump(mode="json"))},
        )
        if appended is None:
            return result, row
        tally.inc(
            metrics.TICKETS,
            event="created",
            channel=row["channel"],
            department=result.department,
            priority=str(result.priority),
            category=result.category,
        )
        return result, appended.ticket or row

    @activity.defn(name=contract.LOAD_POLICY)
    async def load_policy(self, req: PolicyRequest) -> Policy:
        return self._policy(req)

    def _policy(self, req: PolicyRequest) -> Policy:
        cfg = self.config
        if req.department not in cfg.departments:
            raise ApplicationError(f"unknown department {req.department!r}", non_retryable=True)
        sla = cfg.sla.resolve(req.department, req.priority, req.customer_type)
        first, reply, resolution = (sla.seconds[m] for m in ("first_response", "next_reply", "resolution"))
        assert first is not None and resolution is not None
        return Policy(
            first_response_seconds=first,
            next_reply_seconds=reply,
            resolution_seconds=resolution,
            reminder_fractions=list(cfg.sla.reminder_fractions),
            tier_budget_seconds={t.level: t.budget_minutes * 60 for t in cfg.tiers},
            csat_delay_seconds=round(
                _or(cfg.departments[req.department].csat_delay_minutes, cfg.csat.delay_minutes) * 60
            ),
            csat_window_seconds=round(cfg.csat.window_minutes * 60),
            business={metric: hours == "business" for metric, hours in sla.hours.items()},
            calendar=cfg.calendar_of(req.department),
            pause_when_pending=list(cfg.sla.pause_when_pending),
            notify_out_of_hours=req.priority in cfg.sla.notify_out_of_hours,
            escalate_on_breach=list(cfg.sla.escalate_on_breach),
            departments=sorted(cfg.departments),
            agents=[a.id for a in cfg.departments[req.department].agents],
            csat_reminder_seconds=_seconds(cfg.csat.reminder_minutes),
            pending_reminder_seconds=_seconds(cfg.pending.reminder_minutes),
        )

    @activity.defn(name=contract.ROUTE)
    async def route(self, req: RouteRequest) -> Routing:
        async with self.pool.connection() as conn, conn.transaction():
            return (await self._route(conn, req))[0]

    async def _route(
        self, conn: AsyncConnection[dict[str, Any]], req: RouteRequest, known: dict[str, Any] | None = None
    ) -> tuple[Routing, dict[str, Any] | None]:
        """The routing decision for this step, made once and read back on a retry; and the ticket row after it
        (`known` when nothing was written)."""
        dept = self.config.departments.get(req.department)
        if dept is None:
            raise ApplicationError(f"unknown department {req.department!r}", non_retryable=True)
        queue = f"{req.department}:t{req.tier}"
        prior = await (
            await conn.execute(
                "SELECT department, tier, queue, agent, reason FROM routing_decisions"
                " WHERE ticket_id = %s AND step = %s",
                (req.ticket_id, req.step),
            )
        ).fetchone()
        if prior is not None:
            return Routing.model_validate(prior), known
        ticket = await self._ticket(conn, req.ticket_id, known)
        routing = await self._assign(conn, dept, req, queue, ticket)
        await conn.execute(
            "INSERT INTO routing_decisions (ticket_id, step, department, tier, queue, agent, reason, at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                req.ticket_id,
                req.step,
                routing.department,
                routing.tier,
                routing.queue,
                routing.agent,
                routing.reason,
                req.at,
            ),
        )
        appended = await self._audit(
            conn,
            AuditEntry(
                ticket_id=req.ticket_id,
                seq=req.seq,
                event="routed",
                actor="router",
                at=req.at,
                detail=routing.model_dump(mode="json"),
                ticket_update={
                    "department": routing.department,
                    "tier": routing.tier,
                    "queue": routing.queue,
                    "assignee": routing.agent,
                },
            ),
        )
        return routing, (appended and appended.ticket) or ticket

    async def _assign(
        self,
        conn: AsyncConnection[dict[str, Any]],
        dept: Department,
        req: RouteRequest,
        queue: str,
        ticket: dict[str, Any],
    ) -> Routing:
        staff = dept.agents_for(req.tier)
        if not staff:
            return Routing(
                department=req.department,
                tier=req.tier,
                queue=queue,
                agent=None,
                reason=f"queue {queue} has no agent; left unassigned in the queue",
            )
        candidates = [
            Candidate(
                a.id,
                tuple(a.languages),
                tuple(a.skills),
                a.away,
                self.config.calendars.get(a.calendar or dept.calendar or ""),
            )
            for a in staff
        ]
        present, shift_note = on_shift(candidates, req.at)
        wanted = next((a for a in present if a.id == req.preferred_agent), None)
        if wanted is not None:
            return Routing(
                department=req.department,
                tier=req.tier,
                queue=queue,
                agent=wanted.id,
                reason=f"{shift_note}an automation rule asked for {wanted.id} in queue {queue}",
            )
        if not present:
            return Routing(
                department=req.department,
                tier=req.tier,
                queue=queue,
                agent=None,
                reason=f"everyone in queue {queue} is away; left unassigned in the queue",
            )
        cursor = (
            await (
                await conn.execute(
                    "INSERT INTO queue_cursors (queue, next_index) VALUES (%s, 1)"
                    " ON CONFLICT (queue) DO UPDATE SET next_index = queue_cursors.next_index + 1"
                    " RETURNING next_index - 1 AS idx",
                    (queue,),
                )
            ).fetchone()
            or {"idx": 0}
        )["idx"]
        loads: dict[str, int] = {}
        if dept.assignment != "round_robin":
            rows = await (
                await conn.execute(  # kept by a trigger (0011): counting open tickets grew with the backlog
                    "SELECT agent, open FROM agent_open_tickets WHERE agent = ANY(%s)", ([a.id for a in present],)
                )
            ).fetchall()
            loads = {r["agent"]: r["open"] for r in rows}
            if ticket["assignee"] in loads and ticket["status"] in OPEN_STATES:
                loads[ticket["assignee"]] -= 1  # a ticket re-routed does not weigh on the agent who has it now
        pick, why = choose(
            present,
            dept.assignment,
            cursor=cursor,
            loads=loads,
            language=ticket["language"],
            category=ticket["category"],
        )
        return Routing(
            department=req.department,
            tier=req.tier,
            queue=queue,
            agent=pick.id,
            reason=f"{shift_note}{why} in queue {queue}",
        )

    # --- audit ----------------------------------------------------------------------------------------

    @activity.defn(name=contract.RECORD_EVENT)
    async def record_event(self, entry: AuditEntry) -> None:
        tally = metrics.Tally()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await self._record(conn, entry, tally)
            tally.flush()  # counted once the rows are committed, before anything else can fail

    async def _record(
        self,
        conn: AsyncConnection[dict[str, Any]],
        entry: AuditEntry,
        tally: metrics.Tally,
        known: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """The entry, its SLA events and message, with the metrics it moves held in `tally`; and the ticket row
        after it (`known` when the entry was there)."""
        appended = await self._audit(conn, entry)
        if appended is None:
            return known  # a retry or a replay: written and counted before
        row = await self._ticket(conn, entry.ticket_id, appended.ticket or known)
        dept, prio = row["department"] or "", row["priority"] or ""
        if entry.sla_events:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO sla_events (ticket_id, seq, metric, clock_started_at, event, elapsed_seconds,"
                    " target_seconds, business, fraction, department, priority, at, clock_applied)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)",  # and applied below
                    [
                        (
                            entry.ticket_id,
                            entry.seq,
                            e.metric,
                            e.clock_started_at,
                            e.event,
                            e.elapsed_seconds,
                            e.target_seconds,
                            e.business,
                            e.fraction,
                            row["department"],
                            row["priority"],
                            entry.at,
                        )
                        for e in entry.sla_events
                    ],
                )
            await clocks.apply(
                conn, clocks.clock_rows(entry.ticket_id, entry.seq, entry.at, entry.sla_events, dept, self.config)
            )
            await self._count_sla(conn, entry, dept, prio, tally)
        if entry.message is not None:
            m = entry.message
            await conn.execute(
                "INSERT INTO messages (ticket_id, seq, author_kind, author, body, external_message_id,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (entry.ticket_id, entry.seq, m.author_kind, m.author, m.body, m.external_message_id, entry.at),
            )
        if entry.event in ("resolved", "reopened", "closed", "closed_as_spam"):
            tally.inc(
                metrics.TICKETS,
                event="closed" if entry.event == "closed_as_spam" else entry.event,
                channel=row["channel"],
                department=dept,
                priority=prio,
                category=row["category"] or "",
            )
        elif entry.event in ("escalated", "deescalated"):
            d = entry.detail
            tally.inc(
                metrics.ESCALATIONS,
                department=dept,
                from_tier=d.get("from_tier", ""),
                to_tier=d.get("to_tier", ""),
                cause=d.get("cause", ""),
            )
        elif entry.event == "survey_sent":
            tally.inc(metrics.CSAT_SURVEYS, department=dept)
        elif entry.event == "notification_bounced":
            bounced = await (
                await conn.execute(
                    "UPDATE outbox SET status = 'bounced', last_error = %s, failed_at = %s"
                    " WHERE ticket_id = %s AND message_id = %s RETURNING template",
                    (
                        entry.detail.get("diagnostic") or "bounced",
                        entry.at,
                        entry.ticket_id,
                        entry.detail["message_id"],
                    ),
                )
            ).fetchone()
            if bounced is not None:
                tally.inc(metrics.NOTIFICATIONS, template=bounced["template"], outcome="bounced")
        return row

    @staticmethod
    async def _count_sla(
        conn: AsyncConnection[dict[str, Any]], entry: AuditEntry, dept: str, prio: str, tally: metrics.Tally
    ) -> None:
        for e in entry.sla_events:
            if e.metric == "tier":  # a tier budget is not an SLA: it shows up as escalations
                continue
            labels = {"metric": e.metric, "department": dept, "priority": prio}
            if e.event in ("reminder", "breached"):
                tally.inc(metrics.SLA_EVENTS, event=e.event, **labels)
            elif e.event == "fulfilled":
                late = await (
                    await conn.execute(
                        "SELECT 1 FROM sla_events WHERE ticket_id = %s AND metric = %s AND clock_started_at = %s"
                        " AND event = 'breached' LIMIT 1",
                        (entry.ticket_id, e.metric, e.clock_started_at),
                    )
                ).fetchone()
                tally.inc(metrics.SLA_EVENTS, event="fulfilled_late" if late else "met", **labels)
                histogram = {"first_response": metrics.FIRST_RESPONSE, "resolution": metrics.RESOLUTION}.get(e.metric)
                if histogram is not None:
                    wall = max(0.0, (entry.at - e.clock_started_at).total_seconds())
                    tally.observe(histogram, e.elapsed_seconds, department=dept, priority=prio, time="business")
                    tally.observe(histogram, wall, department=dept, priority=prio, time="calendar")

    @activity.defn(name=contract.RECORD_RATING)
    async def record_rating(self, rec: RatingRecord) -> None:
        r = rec.rating
        async with self.pool.connection() as conn:
            async with conn.transaction():
                inserted = await self._audit(
                    conn,
                    AuditEntry(
                        ticket_id=rec.ticket_id,
                        seq=rec.seq,
                        event="rated",
                        actor="customer",
                        at=r.at,
                        detail={
                            "score": r.score,
                            "raw": r.raw,
                            "resolution": r.resolution,
                            "comment": rec.comment,
                            "reason": r.reason,
                            "via": r.via,
                        },
                    ),
                )
                if not inserted:
                    return
                first = await (
                    await conn.execute(
                        """
                    INSERT INTO csat_ratings (ticket_id, resolution, score, raw, comment, agent, tier, department,
                        rated_at, reason, via)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (ticket_id, resolution) DO UPDATE SET score = EXCLUDED.score, raw = EXCLUDED.raw,
                        comment = EXCLUDED.comment, rated_at = EXCLUDED.rated_at, reason = EXCLUDED.reason,
                        via = EXCLUDED.via
                    RETURNING (xmax = 0) AS inserted
                    """,
                        (
                            rec.ticket_id,
                            r.resolution,
                            r.score,
                            str(r.raw),
                            rec.comment,
                            r.agent,
                            r.tier,
                            r.department,
                            r.at,
                            r.reason,
                            r.via,
                        ),
                    )
                ).fetchone()
            if first is not None and first["inserted"]:
                metrics.observe(metrics.CSAT_SCORE, r.score, department=r.department, agent=r.agent or "", tier=r.tier)
            else:
                metrics.inc(metrics.CSAT_CHANGED, department=r.department)

    async def _audit(
        self, conn: AsyncConnection[dict[str, Any]], entry: AuditEntry, extra: dict[str, Any] | None = None
    ) -> Appended | None:
        """Append the entry and apply its ticket update, only on first insert: None when the entry was there.

        Entry and update are one statement (a data-modifying WITH), which hands back the ticket row as the update
        left it, so a step need not read it again: an opening was 26 statements, each a round trip that costs
        the worker more CPU than the server."""
        changes = {k: v for k, v in entry.ticket_update.items() if k in _UPDATABLE}
        unknown = set(entry.ticket_update) - _UPDATABLE
        if unknown:
            raise ApplicationError(f"ticket columns not updatable: {sorted(unknown)}", non_retryable=True)
        changes.update(extra or {})
        insert = (
            "INSERT INTO audit_log (ticket_id, seq, event, actor, detail, at) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (ticket_id, seq) DO NOTHING"
        )
        values = (
            entry.ticket_id,
            entry.seq,
            entry.event,
            entry.actor,
            Jsonb(json.loads(json.dumps(entry.detail, default=str))),
            entry.at,
        )
        if changes:
            assignments = ", ".join(f"{col} = %s" for col in changes)
            cur = await conn.execute(
                f"WITH entry AS ({insert} RETURNING seq)"  # columns whitelisted above
                f" UPDATE tickets SET {assignments}, updated_at = now() WHERE id = %s AND EXISTS (SELECT FROM entry)"
                " RETURNING *",
                (*values, *changes.values(), entry.ticket_id),
            )
            ticket = await cur.fetchone()
            inserted = ticket is not None
        else:
            cur = await conn.execute(insert, values)
            ticket, inserted = None, cur.rowcount == 1
        if not inserted:
            held = await (
                await conn.execute(
                    "SELECT event, actor FROM audit_log WHERE ticket_id = %s AND seq = %s", (entry.ticket_id, entry.seq)
                )
            ).fetchone()
            if held is not None and (held["event"], held["actor"]) != (entry.event, entry.actor):
                # Not a retry: the run took another path than the one logged (a reset, most likely). Skipping the
                # entry would lose it in silence; retrying keeps the ticket waiting, visibly, for an operator.
                raise ApplicationError(
                    f"audit entry {entry.seq} of ticket {entry.ticket_id} already holds {held['event']!r}, this run"
                    f" writes {entry.event!r}: the ticket's run and its audit log diverged (was it reset?)",
                    type=contract.AUDIT_DIVERGED,
                )
            return None
        return Appended(ticket)

    @staticmethod
    async def _ticket(
        conn: AsyncConnection[dict[str, Any]], ticket_id: str, known: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ticket's row: `known` when the step already holds it as its own last write left it, else read."""
        if known is not None and known["id"] == ticket_id:
            return known
        row = await (await conn.execute("SELECT * FROM tickets WHERE id = %s", (ticket_id,))).fetchone()
        if row is None:
            raise ApplicationError(f"ticket {ticket_id} is not in the database", non_retryable=True)
        return row

    # --- notifications ----------------------------------------------------------------------------------

    @activity.defn(name=contract.RECORD_AND_NOTIFY)
    async def record_and_notify(self, step: EntryWithNotices) -> list[NotificationResult]:
        """An entry and its staff notices in one step: a reminder costs the workflow one activity instead of
        three. The entry and the notices' outbox rows commit together, then each mail gets one attempt; one
        that is not delivered here (or not rendered: that must not hold the entry) comes back `pending` and the
        workflow hands it to `notify`, which retries it for as long as the relay needs or records why it cannot.
        A retry of this step only makes sure of the rows, so a relay that hangs holds the ticket for one
        attempt at most."""
        tally = metrics.Tally()
        async with self.pool.connection() as conn:
            async with conn.transaction():
                ticket = await self._record(conn, step.entry, tally)
                rows = [await self._outbox_or_fault(conn, note, ticket) for note in step.notes]
            tally.flush()
            return await self._first_attempts(conn, step.notes, rows)

    async def _outbox_or_fault(
        self, conn: AsyncConnection[dict[str, Any]], note: Notification, ticket: dict[str, Any] | None = None
    ) -> dict[str, Any] | Exception | None:
        """A step's mail in the step's transaction, or the fault that kept it from rendering.

        A fault of the database is not the mail's: it fails the step. Above all a lost connection, which psycopg's
        transaction block then ends without COMMIT and without an error, so a step that went on would return an
        entry it never wrote."""
        try:
            async with conn.transaction():  # a savepoint: a mail that does not render holds back nothing else
                return await self._outbox(conn, note, ticket)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection lost, a deadlock, a cancelled query: Temporal retries the step
        except Exception as err:  # a template or policy fault: `notify` retries it or records it
            if conn.broken:
                raise
            log.warning("mail %s not rendered, left to notify: %r", note.key, err)
            return err

    async def _first_attempts(
        self,
        conn: AsyncConnection[dict[str, Any]],
        notes: list[Notification],
        rows: list[dict[str, Any] | Exception | None],
    ) -> list[NotificationResult]:
        """After the step's commit, one delivery attempt per pending mail, on the first attempt of the step only
        (a retry may run while the first still sends) and unless an attempt failed in the last
        INLINE_PAUSE_SECONDS; anything not delivered comes back `pending`."""
        first_attempt = activity.info().attempt == 1
        results = []
        for note, row in zip(notes, rows, strict=True):
            if isinstance(row, Exception):
                results.append(NotificationResult(key=note.key, status="pending"))
            elif row is None:
                results.append(NotificationResult(key=note.key, status="no_recipient"))
            elif row["status"] != "pending":
                results.append(self._result(note.key, row))
            elif not first_attempt or self.clock() < self._inline_paused_until:
                results.append(NotificationResult(key=note.key, status="pending", recipient=row["recipient"]))
            else:
                try:
                    results.append(await self._deliver(conn, note, row, self._inline_smtp))
                except Exception as err:  # transient: the row is pending, `notify` takes it from here
                    self._inline_paused_until = self.clock() + INLINE_PAUSE_SECONDS
                    log.warning(
                        "mail %s not delivered inline, left to notify; inline attempts paused for %.0f s: %r",
                        note.key,
                        INLINE_PAUSE_SECONDS,
                        err,
                    )
                    results.append(NotificationResult(key=note.key, status="pending", recipient=row["recipient"]))
        return results

    @activity.defn(name=contract.NOTIFY)
    async def notify(self, note: Notification) -> NotificationResult:
        async with self.pool.connection() as conn:
            async with conn.transaction():  # render into the outbox once; later attempts reuse the row
                row = await self._outbox(conn, note)
            if row is None:
                return NotificationResult(key=note.key, status="no_recipient")
            if row["status"] != "pending":
                return self._result(note.key, row)
            return await self._deliver(conn, note, row, self.smtp)

    async def _outbox(
        self, conn: AsyncConnection[dict[str, Any]], note: Notification, ticket: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The note's outbox row, rendered and inserted on first use (None: it has nobody to go to); `ticket`: the
        row the step holds, if it does."""
        row = await self._outbox_row(conn, note.key, lock=True)
        return row if row is not None else await self._prepare(conn, note, ticket)

    async def _deliver(
        self,
        conn: AsyncConnection[dict[str, Any]],
        note: Notification,
        row: dict[str, Any],
        smtp_settings: SmtpSettings,
    ) -> NotificationResult:
        """One delivery attempt of a pending outbox row; a transient failure raises, a refusal is recorded."""
        msg = mail.build_message(
            sender=row["sender"],
            recipient=row["recipient"],
            mail=mail.RenderedMail(row["subject"], row["body_text"], row["body_html"]),
            message_id=row["message_id"],
            in_reply_to=self._thread_id(note.ticket_id) if note.template != "acknowledgement" else None,
        )
        await conn.execute(  # committed before any byte goes out, so an interrupted attempt is visible
            "UPDATE outbox SET interrupted = interrupted + attempt_open::int, attempt_open = true,"
            " attempts = attempts + 1 WHERE key = %s",
            (note.key,),
        )
        await conn.commit()
        try:
            smtp = await mail.connect(smtp_settings)  # connect and EHLO outside the critical section
        except Exception as err:
            await self._attempt_failed(conn, note.key, err)
            raise
        try:
            async with conn.transaction():
                # The row lock serialises attempts of one key. Between the relay's 250 to DATA and the
                # commit below lies the only window in which a crash can cause a second delivery: one
                # UPDATE and one COMMIT on the same connection. QUIT waits until after the commit.
                locked = await self._outbox_row(conn, note.key, lock=True)
                assert locked is not None
                if locked["status"] != "pending":
                    return self._result(note.key, locked)
                try:
                    # our own bytes: aiosmtplib's re-serialisation folds long subjects at 78 columns
                    # and leaves doubled spaces in non-ASCII ones
                    await smtp.sendmail(row["sender"], [row["recipient"]], msg.as_bytes())
                except Exception as err:
                    if not mail.is_permanent(err):
                        metrics.inc(metrics.NOTIFICATIONS, template=note.template, outcome="transient")
                        raise
                    await conn.execute(
                        "UPDATE outbox SET status = 'failed', attempt_open = false, last_error = %s,"
                        " smtp_code = %s, failed_at = now() WHERE key = %s",
                        (str(err), mail.smtp_code(err), note.key),
                    )
                    metrics.inc(metrics.NOTIFICATIONS, template=note.template, outcome="refused")
                    return NotificationResult(key=note.key, status="failed", recipient=row["recipient"])
                await conn.execute(
                    "UPDATE outbox SET status = 'sent', attempt_open = false, sent_at = now() WHERE key = %s",
                    (note.key,),
                )
            # counted as the commit returns, with no await in between: not after QUIT, a round trip in which a
            # killed worker would lose the count of a mail its outbox row says was sent
            metrics.inc(metrics.NOTIFICATIONS, template=note.template, outcome="sent")
        except Exception as err:
            if not mail.is_permanent(err):
                await self._attempt_failed(conn, note.key, err)
            raise
        finally:
            await mail.close(smtp)
        return NotificationResult(key=note.key, status="sent", recipient=row["recipient"], message_id=row["message_id"])

    @staticmethod
    async def _attempt_failed(conn: AsyncConnection[dict[str, Any]], key: str, err: Exception) -> None:
        """A transient failure is a finished attempt (nothing delivered): close it for the retry."""
        await conn.execute(
            "UPDATE outbox SET attempt_open = false, last_error = %s WHERE key = %s", (repr(err)[:2000], key)
        )
        await conn.commit()

    @staticmethod
    async def _outbox_row(conn: AsyncConnection[dict[str, Any]], key: str, lock: bool) -> dict[str, Any] | None:
        sql = "SELECT * FROM outbox WHERE key = %s" + (" FOR UPDATE" if lock else "")
        return await (await conn.execute(sql, (key,))).fetchone()

    @staticmethod
    def _result(key: str, row: dict[str, Any]) -> NotificationResult:
        status = "already_sent" if row["status"] == "sent" else row["status"]
        return NotificationResult(key=key, status=status, recipient=row["recipient"], message_id=row["message_id"])

    @staticmethod
    def _thread_id(ticket_id: str) -> str:
        return f"<ack.{ticket_id}@ticketflow>"

    async def _prepare(
        self, conn: AsyncConnection[dict[str, Any]], note: Notification, known: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Render the mail and insert it into the outbox (locked for this transaction)."""
        ticket = await self._ticket(conn, note.ticket_id, known)
        dept_key = ticket["department"] or self.config.default_department
        dept = self.config.departments[dept_key]
        agents = {a.id: a for d in self.config.departments.values() for a in d.agents}
        if note.to == "customer":
            recipient, recipient_name = ticket["customer_email"], ticket["customer_name"]
        elif note.to == "assignee":
            agent = agents.get(ticket["assignee"] or "")
            recipient, recipient_name = (agent.email, agent.name) if agent else (dept.lead, "Team lead")
        elif note.to == "lead":
            recipient, recipient_name = dept.lead, "Team lead"
        elif "@" in note.to:
            recipient, recipient_name = note.to, note.to
        else:
            raise ApplicationError(f"unknown recipient kind {note.to!r}", non_retryable=True)
        if not recipient:
            return None
        context = await self._context(conn, ticket, dept_key, note)
        context["recipient_name"] = recipient_name
        template = note.template
        if template == "acknowledgement" and context["opens_at"]:
            template = "out_of_hours"  # the auto-reply that says when the team is back
        lang = self.templates.language_for(template, ticket["language"] if note.to == "customer" else None)
        context["signature"] = dept.signature_for(lang)
        rendered = self.templates.render(template, context, lang)
        message_id = f"<{note.key.replace(':', '.')}@ticketflow>"
        if note.template == "acknowledgement":
            message_id = self._thread_id(note.ticket_id)
        row = await (
            await conn.execute(
                """
            INSERT INTO outbox (key, ticket_id, template, recipient, sender, subject, body_text, body_html,
                message_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING *
            """,
                (
                    note.key,
                    note.ticket_id,
                    template,
                    recipient,
                    dept.email,
                    rendered.subject,
                    rendered.text,
                    rendered.html,
                    message_id,
                ),
            )
        ).fetchone()
        return row

    async def _context(
        self, conn: AsyncConnection[dict[str, Any]], ticket: dict[str, Any], dept_key: str, note: Notification
    ) -> dict[str, Any]:
        cfg = self.config
        dept = cfg.departments[dept_key]
        tz = ZoneInfo(dept.timezone)
        agents = {a.id: a for d in cfg.departments.values() for a in d.agents}
        ctx: dict[str, Any] = {
            "organisation": cfg.organisation,
            "ticket": ticket,
            "ticket_ref": f"#{ticket['id']}",
            "department": dept,
            "lang": ticket["language"] or "en",
            "context": note.context,
            "first_response_due": None,
            "due_at": None,
        }
        cal = cfg.calendar_of(dept_key)
        received = ticket["created_at"]  # out of hours is about when the ticket came in, whenever the mail renders
        ctx["opens_at"] = (
            next_opening(cal, received).astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
            if cal is not None and not is_open(cal, received)
            else None
        )
        if ticket["priority"]:
            sla = cfg.sla.resolve(dept_key, Priority(ticket["priority"]), CustomerType(ticket["customer_type"]))
            first = sla.seconds["first_response"] or 0
            created = ticket["created_at"]
            due = (
                add_business_seconds(cal, created, first)
                if sla.hours["first_response"] == "business" and cal is not None
                else created + timedelta(seconds=first)
            )
            ctx["first_response_due"] = due.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
            metric = note.context.get("metric")
            if note.context.get("due_at"):  # computed by the workflow on the department's calendar
                due_at = datetime.fromisoformat(note.context["due_at"])
                ctx["due_at"] = due_at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
            elif metric in ("first_response", "resolution") and "target_seconds" in note.context:
                elapsed = float(note.context.get("elapsed_seconds", 0))
                left = note.context["target_seconds"] - elapsed
                ctx["due_at"] = (datetime.now(tz) + timedelta(seconds=left)).strftime("%Y-%m-%d %H:%M %Z")
        if note.template == "agent_reply":
            seq = int(note.context["seq"])
            msg = await (
                await conn.execute(
                    "SELECT author, body FROM messages WHERE ticket_id = %s AND seq = %s", (ticket["id"], seq)
                )
            ).fetchone()
            if msg is None:
                raise ApplicationError(f"message {seq} of ticket {ticket['id']} not found", non_retryable=True)
            ctx["message"] = msg
            agent = agents.get(msg["author"])
            ctx["agent_name"] = agent.name if agent else msg["author"]
        ctx["reopen_days"] = max(1, round(cfg.csat.window_minutes / 1440))
        closes = (
            datetime.fromisoformat(note.context["closes_at"])
            if note.context.get("closes_at")  # the workflow's own close time (tickets since "customer-notices")
            else datetime.now(UTC) + timedelta(minutes=cfg.csat.window_minutes)
        )
        ctx["survey_closes"] = closes.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
        if note.template in ("survey", "survey_reminder"):
            if self.survey_links is None:  # retried until the worker is configured: the survey is not lost
                raise ApplicationError("survey links need TICKETFLOW_SURVEY_SECRET and TICKETFLOW_SURVEY_URL")
            resolution = int(note.context.get("resolution") or note.key.rsplit(":", 1)[-1])
            ctx["survey"] = self.survey_links.choices(ticket["id"], resolution, closes, cfg.csat.scale)
        return ctx
