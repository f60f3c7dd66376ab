"""The ticket lifecycle: one durable workflow per ticket.

The workflow owns policy and time: it decides when SLA reminders, breaches, tier escalations,
surveys and the close happen. Every side effect (database, email) is an activity keyed by the
ticket id and an audit sequence number, so retries and replays change nothing twice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar, Unpack

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ticketflow import contract, search
    from ticketflow.calendar import BusinessCalendar, is_open, next_opening
    from ticketflow.models import (
        AgentReply,
        Assign,
        AuditEntry,
        BounceReport,
        Categorisation,
        CategoriseRequest,
        ChangePriority,
        ClockView,
        CustomerReply,
        EntryWithNotices,
        EscalateRequest,
        Escalation,
        HeldNotice,
        IntakeRequest,
        IntakeResult,
        InternalNote,
        MessageRecord,
        Notification,
        NotificationResult,
        OpenRequest,
        OpenResult,
        PendRequest,
        Policy,
        PolicyRequest,
        Priority,
        RateRequest,
        Rating,
        RatingRecord,
        RefreshPolicy,
        ReopenRequest,
        ResolveRequest,
        RouteRequest,
        Routing,
        SlaClock,
        SlaEvent,
        Status,
        TicketState,
        TicketWorkflowInput,
        Transfer,
    )

T = TypeVar("T")


class EntryFields(TypedDict, total=False):
    """What an audit entry carries besides its event, actor and detail."""

    update: dict[str, Any] | None
    message: MessageRecord | None
    sla: list[SlaEvent] | None


# Business hours, the next-reply clock, per-policy pauses, held notices and SLA-driven escalation.
# Tickets opened before it keep the calendar-hours behaviour they started with.
PATCH_SLA_V2 = "sla-business-hours"
# Customer notices: a reminder while we wait on the customer, one survey reminder, a reopen notice,
# and survey links signed for one resolution. Tickets opened before it keep their earlier behaviour.
PATCH_NOTICES = "customer-notices"
# A clock met after its target is recorded as breached even when its timer never got to fire (the
# workflow was busy, e.g. retrying a notice through an SMTP outage, when the deadline passed).
PATCH_BREACH_AT_FULFIL = "breach-before-fulfil"
# Mail goes out from background tasks: a reply or resolve returns at once and the lifecycle's timers
# run on while the relay is down. Customer mail keeps its order; the run ends only when all is sent.
PATCH_MAIL_IN_BACKGROUND = "mail-in-background"
# Database and policy steps run as local activities, inside the workflow task that needs them: no task
# queue round trip and one marker in the history instead of three events. Mail stays a normal activity
# (seconds to minutes against a relay, retried for as long as it is down).
PATCH_LOCAL_STEPS = "local-steps"
# Withdrawn for new tickets: local steps together with mail in background tasks failed replay in the fault-
# injection suite (a local activity's result matched to another step after a worker restart). Tickets that
# recorded the local-steps marker keep it; every other ticket runs its steps as normal activities.
PATCH_STEPS_AS_ACTIVITIES = "steps-as-activities"
# A new ticket opens in one activity (intake, categorisation, policy, routing and the `opened` entry in one
# transaction) instead of five. It is also the first patch a run records alone: each `patched()` call writes a
# marker and a TemporalChangeVersion search-attribute upsert (a visibility write on the server), five per
# ticket opened before, so a run that records a release asks for no earlier patch.
PATCH_OPEN_IN_ONE_STEP = "open-in-one-step"
# An SLA reminder or breach and its staff mails in one activity (the entry and the outbox rows in one
# transaction, then one delivery attempt each) instead of an entry and then a mail activity per recipient: a
# wave of coinciding deadlines costs two workflow tasks per ticket instead of three or four. A mail the step
# could not deliver goes on in the background as before.
PATCH_NOTICES_IN_STEP = "notices-in-step"
# The acknowledgement's outbox row commits with the opening, and the opening step makes its first delivery
# attempt: an opening is two workflow tasks and one activity instead of three and two. Not delivered there, it
# goes on in the background as before; so does one asked of a worker that does not know the field yet.
PATCH_ACK_IN_OPEN_STEP = "ack-in-open-step"
# The opening step runs as a local activity, inside the first workflow task: an opening is one workflow task, a
# marker and no activity task, instead of two workflow tasks and an activity. Only the opening: it runs before
# anything else of the ticket is in flight (no mail in the background, no other step), unlike the withdrawn
# local-steps, whose results replay matched to the wrong step beside background mail.
PATCH_OPEN_AS_LOCAL_STEP = "open-as-local-step"
# Patches a run records alone, oldest first: each stands for every patch introduced before it. Every new patch
# joins the end of this list (a patch outside it counts as older than all of them).
RELEASES = (PATCH_OPEN_IN_ONE_STEP, PATCH_NOTICES_IN_STEP, PATCH_ACK_IN_OPEN_STEP, PATCH_OPEN_AS_LOCAL_STEP)
# A step still failing after this long (a database outage) retries on durable timers, visible in the history,
# instead of holding the workflow task open.
LOCAL_RETRY_THRESHOLD = timedelta(seconds=5)
RECENT_SURVEY_NONCES = 20
EPSILON = 0.001  # seconds: calendar arithmetic is exact to the microsecond, never loop on rounding
STAFF_TEMPLATES = ("sla_reminder", "sla_breach", "escalation")
MAX_TIER = 4
RECENT_MESSAGE_IDS = 50  # external ids of recent customer messages kept for de-duplication
SYSTEM = "system"

# Database and policy steps are quick; retry them for as long as it takes (an outage loses nothing).
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=[contract.INVALID_TICKET],
)
# Mail: back off further, stop on a permanent refusal (bad address) instead of hammering the relay.
MAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=[contract.PERMANENT_DELIVERY],
)
STEP_TIMEOUT = timedelta(seconds=15)
MAIL_TIMEOUT = timedelta(seconds=30)


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=contract.INVALID_TRANSITION, non_retryable=True)


@workflow.defn(name=contract.WORKFLOW_TYPE)
class TicketWorkflow:
    @workflow.init
    def __init__(self, input: TicketWorkflowInput) -> None:
        ticket_id = workflow.info().workflow_id.removeprefix("ticket-")
        self.state: TicketState = input.resume or TicketState(ticket_id=ticket_id)
        self._lock = asyncio.Lock()
        self._changed = False
        self._published: dict[str, Any] = {}
        self._mail_in_flight = 0
        self._customer_mail: asyncio.Task[None] | None = None  # the last customer mail, for ordering
        self._release: int | None = None  # index in RELEASES of the release this run recorded, -1: none

    # --- the lifecycle ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: TicketWorkflowInput) -> TicketState:
        # Asked first, so a run records its release before any command. (An update handler that runs before
        # `run` in the first activation asks earlier; replay takes the same order.)
        self._recorded_release()
        if input.resume is None:
            self.state.sla_v2 = self._since(PATCH_SLA_V2)
            self.state.notices_v3 = self._since(PATCH_NOTICES)
            await self._open(input.ticket or {}, imported=input.imported)
        self._publish_search_attributes()

        while self.state.status != Status.CLOSED:
            await self._sleep_until_next_event()
            async with self._lock:
                await self._fire_due_events()
            self._publish_search_attributes()
            if workflow.info().is_continue_as_new_suggested() and not self._closed():
                await self._quiesce()
                workflow.continue_as_new(TicketWorkflowInput(resume=self.state))

        await self._quiesce()
        return self.state

    def _recorded_release(self) -> int:
        """A new run records the newest release and nothing else; a run replayed from an older history finds an
        older release, or none, and asks for the patches it has one by one."""
        if self._release is None:
            found = (i for i in reversed(range(len(RELEASES))) if workflow.patched(RELEASES[i]))
            self._release = next(found, -1)
        return self._release

    def _since(self, patch: str) -> bool:
        """Whether this run has the behaviour `patch` introduced."""
        release = self._recorded_release()
        if release >= 0 and (patch not in RELEASES or RELEASES.index(patch) <= release):
            return True
        return workflow.patched(patch)

    async def _quiesce(self) -> None:
        """Before the run ends: every handler finished and every mail of this run delivered."""
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and self._mail_in_flight == 0)

    async def _open(self, raw: dict[str, Any], imported: bool = False) -> None:
        if self._since(PATCH_OPEN_IN_ONE_STEP):
            await self._open_in_one_step(raw, imported)
            return
        now = workflow.now()
        intake = await self._intake(
            contract.INTAKE, IntakeRequest(ticket_id=self.state.ticket_id, raw=raw, received_at=now), IntakeResult
        )
        s = self.state
        self._admitted(intake)
        s.audit_seq = max(s.audit_seq, 1)  # seq 1 is the 'created' entry written by intake

        cat = await self._activity(
            contract.CATEGORISE,
            CategoriseRequest(ticket_id=s.ticket_id, seq=self._next_seq(), at=workflow.now()),
            Categorisation,
        )
        self._categorised(cat)
        if cat.spam:
            await self._close_as_spam(cat)
            return
        s.policy = await self._load_policy()

        start = workflow.now()
        s.sla = {
            "first_response": self._new_clock("first_response", s.policy.first_response_seconds, start),
            "resolution": self._new_clock("resolution", s.policy.resolution_seconds, start),
        }
        await self._route(1, start, preferred=cat.assign)
        s.status = Status.OPEN
        await self._record(
            "opened",
            SYSTEM,
            {"status": Status.OPEN},
            update={"status": Status.OPEN},
            sla=[self._event(c, "started", start) for c in s.sla.values()],
        )
        if not imported:  # a ticket migrated from another help desk was acknowledged there long ago
            await self._notify("acknowledgement", "customer", key=f"ack:{s.ticket_id}")

    async def _open_in_one_step(self, raw: dict[str, Any], imported: bool) -> None:
        s, now = self.state, workflow.now()
        # a ticket migrated from another help desk was acknowledged there long ago
        ack = None if imported else self._note("acknowledgement", "customer", f"ack:{s.ticket_id}", None)
        in_step = ack if ack is not None and self._since(PATCH_ACK_IN_OPEN_STEP) else None
        opened = await self._intake(
            contract.OPEN_TICKET,
            OpenRequest(ticket_id=s.ticket_id, raw=raw, at=now, acknowledge=in_step),
            OpenResult,
            local=self._since(PATCH_OPEN_AS_LOCAL_STEP),
        )
        self._admitted(opened.intake)
        self._categorised(opened.categorisation)
        s.audit_seq = max(s.audit_seq, opened.audit_seq)
        if opened.policy is None or opened.routing is None:
            await self._close_as_spam(opened.categorisation)
            return
        s.policy = opened.policy
        s.sla = s.policy.opening_clocks(now)  # the clocks the step recorded as started
        self._routed(opened.routing, 1, now)
        s.status = Status.OPEN
        # not attempted (a run from before the patch, or a worker that ignores the request) or not delivered there
        if ack is not None and (opened.acknowledgement is None or opened.acknowledgement.status == "pending"):
            await self._send(ack)

    async def _intake(self, name: str, arg: Any, result_type: type[T], *, local: bool = False) -> T:
        """The first step: a ticket that fails validation fails the workflow with the field-level message."""
        try:
            return await self._activity(name, arg, result_type, local=local)
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TICKET:
                raise ApplicationError(
                    cause.message, *cause.details, type=contract.INVALID_TICKET, non_retryable=True
                ) from err
            raise

    def _admitted(self, intake: IntakeResult) -> None:
        s = self.state
        s.channel, s.customer_type, s.created_at = intake.channel, intake.customer_type, intake.created_at
        s.messages = 1  # the customer's opening message

    def _categorised(self, cat: Categorisation) -> None:
        s = self.state
        s.category, s.department, s.priority, s.language = cat.category, cat.department, cat.priority, cat.language
        s.categorisation_reasons = cat.reasons

    async def _close_as_spam(self, cat: Categorisation) -> None:
        """An automation rule marked it: closed at once, nobody notified, the record kept."""
        s = self.state
        s.status = Status.CLOSED
        now = workflow.now()
        await self._record(
            "closed_as_spam", "rules", {"reasons": cat.reasons}, update={"status": Status.CLOSED, "closed_at": now}
        )

    async def _sleep_until_next_event(self) -> None:
        self._changed = False
        wake = self._next_event_at()
        if wake is None:
            await workflow.wait_condition(lambda: self._changed)
            return
        delay = (wake - workflow.now()).total_seconds()
        if delay <= 0:
            return
        try:
            await workflow.wait_condition(
                lambda: self._changed, timeout=timedelta(seconds=delay), timeout_summary=self._next_event_name()
            )
        except TimeoutError:
            pass

    def _closed(self) -> bool:
        return self.state.status == Status.CLOSED

    def _timed_clocks(self) -> list[SlaClock]:
        clocks = [c for c in self.state.sla.values() if c.active]
        if self.state.tier_clock and self.state.tier_clock.active:
            clocks.append(self.state.tier_clock)
        return clocks

    def _next_event_at(self) -> datetime | None:
        s, now = self.state, workflow.now()
        candidates: list[datetime] = []
        for clock in self._timed_clocks():
            if clock.running_since is None:
                continue
            for fraction in clock.pending_thresholds():
                at = clock.instant_of(fraction * clock.target_seconds, self._cal)
                if at is not None:
                    candidates.append(max(at, now))
                break
        candidates.extend(h.release_at for h in s.held)
        if s.status == Status.RESOLVED:
            if s.survey_due_at and s.survey_sent_for < s.resolutions and not self._rated_current():
                candidates.append(s.survey_due_at)
            if s.close_at:
                candidates.append(s.close_at)
        if (reminder := self._survey_reminder_at()) is not None:
            candidates.append(reminder)
        if (reminder := self._pending_reminder_at()) is not None:
            candidates.append(reminder)
        return min(candidates) if candidates else None

    def _survey_reminder_at(self) -> datetime | None:
        """One reminder per resolution, while the survey is unanswered and still open."""
        s = self.state
        if not s.notices_v3 or s.policy is None or s.policy.csat_reminder_seconds is None:
            return None
        if s.status != Status.RESOLVED or s.survey_sent_at is None or s.survey_reminded_for >= s.resolutions:
            return None
        if self._rated_current():
            return None
        at = s.survey_sent_at + timedelta(seconds=s.policy.csat_reminder_seconds)
        return at if s.close_at is None or at < s.close_at else None

    def _pending_reminder_at(self) -> datetime | None:
        """One reminder per wait on the customer."""
        s = self.state
        if not s.notices_v3 or s.policy is None or s.policy.pending_reminder_seconds is None:
            return None
        if s.status != Status.PENDING or s.pending_since is None or s.pending_reminded:
            return None
        return s.pending_since + timedelta(seconds=s.policy.pending_reminder_seconds)

    def _next_event_name(self) -> str:
        return f"next ticket event ({self.state.status})"

    async def _fire_due_events(self) -> None:
        s, now = self.state, workflow.now()
        await self._release_held(now)
        for clock in list(s.sla.values()):
            await self._fire_sla_thresholds(clock, now)
        tier = s.tier_clock
        if tier and tier.active and not tier.breached and self._reached(tier, tier.target_seconds, now):
            tier.breached = True
            if s.tier < MAX_TIER:
                await self._escalate(s.tier + 1, "timer", f"tier {s.tier} budget of {tier.target_seconds}s spent")
            else:
                await self._record("tier_budget_exhausted", SYSTEM, {"tier": s.tier})
                await self._notify("escalation", "lead", context={"cause": "tier 4 budget exhausted"})
        if s.status == Status.RESOLVED:
            if (
                s.survey_due_at
                and now >= s.survey_due_at
                and s.survey_sent_for < s.resolutions
                and not self._rated_current()
            ):
                s.survey_sent_for = s.resolutions
                if s.notices_v3:
                    s.survey_sent_at = now
                await self._notify(
                    "survey", "customer", key=f"csat:{s.ticket_id}:{s.resolutions}", context=self._survey_context()
                )
                await self._record("survey_sent", SYSTEM, {"resolution": s.resolutions})
            if (at := self._survey_reminder_at()) is not None and now >= at:
                s.survey_reminded_for = s.resolutions
                await self._notify(
                    "survey_reminder",
                    "customer",
                    key=f"csat-reminder:{s.ticket_id}:{s.resolutions}",
                    context=self._survey_context(),
                )
                await self._record("survey_reminder_sent", SYSTEM, {"resolution": s.resolutions})
            if s.close_at and now >= s.close_at:
                s.status = Status.CLOSED
                await self._record("closed", SYSTEM, {}, update={"status": Status.CLOSED, "closed_at": now})

        if (at := self._pending_reminder_at()) is not None and now >= at:
            s.pending_reminded = True
            assert s.pending_since is not None
            since = s.pending_since
            await self._notify(
                "pending_reminder", "customer", key=f"pending-reminder:{s.ticket_id}:{since.timestamp():.0f}"
            )
            await self._record("pending_reminder_sent", SYSTEM, {"pending_since": since.isoformat()})

    def _survey_context(self) -> dict[str, Any]:
        """What the survey link is signed for: this resolution, valid until the survey closes."""
        s = self.state
        if not s.notices_v3 or s.close_at is None:
            return {}
        return {"resolution": s.resolutions, "closes_at": s.close_at.isoformat()}

    def _enter_pending(self, now: datetime) -> None:
        if self.state.notices_v3:
            self.state.pending_since, self.state.pending_reminded = now, False

    async def _fire_sla_thresholds(self, clock: SlaClock, now: datetime) -> None:
        """Announce the highest threshold the clock has reached, marking lower ones as passed.

        Elapsed time is frozen at a pause, so a threshold crossed just before a pause is still
        announced even when the pause arrived first (the Alga PSA bug)."""
        if not clock.active:
            return
        due = [f for f in clock.pending_thresholds() if self._reached(clock, f * clock.target_seconds, now)]
        if not due:
            return
        s = self.state
        top = max(due)
        skipped = [f for f in due if f != top]
        clock.reminders_sent.extend(f for f in due if f < 1.0)
        elapsed = clock.elapsed(now, self._cal)
        detail: dict[str, Any] = {
            "metric": clock.metric,
            "fraction": top,
            "target_seconds": clock.target_seconds,
            "elapsed_seconds": round(elapsed, 3),
            "superseded": skipped,
        }
        if s.sla_v2:
            detail["business"] = clock.business
            due_instant = clock.due_at(self._cal)
            detail["due_at"] = due_instant.isoformat() if due_instant else None
        if top >= 1.0:
            clock.breached = True
            s.sla_breached = True
            await self._record_breach(clock, detail, now, notify=("assignee", "lead"))
            if not s.sla_v2 or s.policy is None:
                return
            if s.tier == MAX_TIER:  # nobody above tier 4: page the department lead, whatever the hour
                await self._notify("page", "lead", context=detail)
            elif clock.metric in s.policy.escalate_on_breach and s.status in (Status.OPEN, Status.PENDING):
                await self._escalate(s.tier + 1, "breach", f"{clock.metric} SLA breached at tier {s.tier}")
        else:
            last = s.sla_v2 and clock.reminder_fractions and top == max(clock.reminder_fractions)
            await self._record_with_staff_notices(
                self._entry("sla_reminder", SYSTEM, detail, sla=[self._event(clock, "reminder", now, fraction=top)]),
                "sla_reminder",
                ("assignee", "lead") if last else ("assignee",),  # last warning: the lead hears too
            )

    # --- steps -------------------------------------------------------------------------------------

    async def _route(self, tier: int, at: datetime, preferred: str | None = None) -> Routing:
        s = self.state
        assert s.department is not None and s.policy is not None
        routing = await self._activity(
            contract.ROUTE,
            RouteRequest(
                ticket_id=s.ticket_id,
                seq=self._next_seq(),
                department=s.department,
                tier=tier,
                step=f"route:{s.audit_seq}",
                at=at,
                preferred_agent=preferred,
            ),
            Routing,
        )
        self._routed(routing, tier, at)
        return routing

    def _routed(self, routing: Routing, tier: int, at: datetime) -> None:
        s = self.state
        assert s.policy is not None
        s.tier, s.queue, s.assignee = routing.tier, routing.queue, routing.agent
        running = s.status != Status.PENDING
        s.tier_clock = self._new_clock("tier", s.policy.tier_budget_seconds[tier], at, running=running)

    async def _escalate(self, to_tier: int, cause: str, reason: str) -> None:
        s, now = self.state, workflow.now()
        from_tier = s.tier
        s.escalations.append(Escalation(from_tier=from_tier, to_tier=to_tier, cause=cause, reason=reason, at=now))
        routing = await self._route(to_tier, now)
        await self._record(
            "escalated" if to_tier > from_tier else "deescalated",
            SYSTEM if cause in ("timer", "breach") else cause,
            {"from_tier": from_tier, "to_tier": to_tier, "cause": cause, "reason": reason, "agent": routing.agent},
        )
        if s.sla_v2 and to_tier < from_tier:
            return  # a de-escalation informs nobody but the new assignee's queue
        context = {"from_tier": from_tier, "to_tier": to_tier, "cause": cause, "reason": reason}
        await self._notify_staff("escalation", "assignee", context)
        if to_tier == MAX_TIER:
            await self._notify_staff("escalation", "lead", context)

    async def _load_policy(self) -> Policy:
        s = self.state
        assert s.department is not None and s.priority is not None
        return await self._activity(
            contract.LOAD_POLICY,
            PolicyRequest(department=s.department, priority=s.priority, customer_type=s.customer_type),
            Policy,
        )

    def _new_clock(self, metric: str, target: int, at: datetime, running: bool = True) -> SlaClock:
        policy = self.state.policy
        if policy is not None and self.state.sla_v2:
            return policy.clock(metric, target, at, running)
        return SlaClock(  # tickets from before business hours count calendar time
            metric=metric,
            target_seconds=target,
            started_at=at,
            running_since=at if running else None,
            reminder_fractions=policy.reminder_fractions if policy and metric != "tier" else [],
        )

    @property
    def _cal(self) -> BusinessCalendar | None:
        s = self.state
        return s.policy.calendar if s.sla_v2 and s.policy else None

    def _reached(self, clock: SlaClock, seconds: float, now: datetime) -> bool:
        return clock.elapsed(now, self._cal) >= seconds - (EPSILON if self.state.sla_v2 else 0.0)

    def _pausable(self, clock: SlaClock) -> bool:
        policy = self.state.policy
        return not self.state.sla_v2 or policy is None or clock.metric in policy.pause_when_pending

    def _pause_clocks(self, now: datetime) -> list[SlaEvent]:
        events = []
        for clock in self._timed_clocks():
            if clock.running_since is not None and self._pausable(clock):
                clock.pause(now, self._cal)
                events.append(self._event(clock, "paused", now))
        return events

    def _resume_clocks(self, now: datetime) -> list[SlaEvent]:
        events = []
        for clock in self._timed_clocks():
            if clock.running_since is None:
                clock.resume(now)
                events.append(self._event(clock, "resumed", now))
        return events

    def _event(self, clock: SlaClock, event: str, now: datetime, fraction: float | None = None) -> SlaEvent:
        return SlaEvent(
            metric=clock.metric,
            clock_started_at=clock.started_at,
            event=event,
            elapsed_seconds=round(clock.elapsed(now, self._cal), 6),
            target_seconds=clock.target_seconds,
            business=clock.business,
            fraction=fraction,
        )

    async def _record_overdue(self, metrics: tuple[str, ...], now: datetime) -> None:
        """Before a clock is met, record a breach its timer missed; nobody is paged after the fact."""
        s = self.state
        if not s.sla_v2:
            return
        overdue = [
            c
            for c in self._timed_clocks()
            if c.metric in metrics and not c.breached and self._reached(c, c.target_seconds, now)
        ]
        if not overdue or not self._since(PATCH_BREACH_AT_FULFIL):
            return
        for clock in overdue:
            clock.breached = True
            clock.reminders_sent.extend(f for f in clock.reminder_fractions if f not in clock.reminders_sent)
            s.sla_breached = True
            detail = {
                "metric": clock.metric,
                "fraction": 1.0,
                "target_seconds": clock.target_seconds,
                "elapsed_seconds": round(clock.elapsed(now, self._cal), 3),
                "noticed": "when the clock was met",
            }
            await self._record_breach(clock, detail, now)

    async def _record_breach(
        self, clock: SlaClock, detail: dict[str, Any], now: datetime, notify: tuple[str, ...] = ()
    ) -> None:
        entry = self._entry(
            "sla_breach",
            SYSTEM,
            detail,
            update={"sla_breached": True},
            sla=[self._event(clock, "breached", now, fraction=1.0)],
        )
        await self._record_with_staff_notices(entry, "sla_breach", notify)

    def _fulfil(self, metrics: tuple[str, ...], now: datetime) -> list[SlaEvent]:
        events = []
        for clock in self._timed_clocks():
            if clock.metric in metrics:
                clock.pause(now, self._cal)
                clock.fulfilled_at = now
                events.append(self._event(clock, "fulfilled", now))
        return events

    async def _record_with_staff_notices(self, entry: AuditEntry, template: str, recipients: tuple[str, ...]) -> None:
        """The entry, then its notices to staff (the entry's detail is their context): in one step when they may
        go out now, each one not delivered there handed to the background like any other mail."""
        if not recipients or not self._since(PATCH_NOTICES_IN_STEP) or self._staff_notices_held():
            await self._activity(contract.RECORD_EVENT, entry)
            for to in recipients:
                await self._notify_staff(template, to, entry.detail)
            return
        notes = [self._note(template, to, None, entry.detail, seq=entry.seq) for to in recipients]
        results = await self._activity(
            contract.RECORD_AND_NOTIFY, EntryWithNotices(entry=entry, notes=notes), list[NotificationResult]
        )
        for note, result in zip(notes, results, strict=True):
            if result.status == "pending":
                await self._send(note)

    def _staff_notices_held(self) -> bool:
        """Staff notices wait for the department to open unless policy says they may go out now."""
        s, cal = self.state, self.state.policy.calendar if self.state.policy else None
        return bool(
            s.sla_v2 and s.policy and not s.policy.notify_out_of_hours and cal and not is_open(cal, workflow.now())
        )

    async def _notify_staff(self, template: str, to: str, context: dict[str, Any]) -> None:
        s, now, cal = self.state, workflow.now(), self.state.policy.calendar if self.state.policy else None
        if self._staff_notices_held() and cal:
            note = self._note(template, to, None, context)
            release = next_opening(cal, now)
            s.held.append(HeldNotice(note=note, release_at=release))
            await self._record("notification_held", SYSTEM, {"template": template, "to": to, "until": release})
            return
        await self._notify(template, to, context=context)

    async def _release_held(self, now: datetime) -> None:
        due = [h for h in self.state.held if h.release_at <= now]
        self.state.held = [h for h in self.state.held if h.release_at > now]
        for held in due:
            await self._send(held.note)

    def _rated_current(self) -> bool:
        return any(r.resolution == self.state.resolutions for r in self.state.ratings)

    # --- activity plumbing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.state.audit_seq += 1
        return self.state.audit_seq

    async def _activity(self, name: str, arg: Any, result_type: type[T] | None = None, *, local: bool = False) -> T:
        """A database or policy step: milliseconds of work, idempotent by its key. Run `local`ly, inside the
        workflow task that asks for it; retried there for `LOCAL_RETRY_THRESHOLD`, then on durable timers."""
        if local or (not self._since(PATCH_STEPS_AS_ACTIVITIES) and workflow.patched(PATCH_LOCAL_STEPS)):
            done: T = await workflow.execute_local_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            )
            return done
        result: T = await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        return result

    async def _record(self, event: str, actor: str, detail: dict[str, Any], **fields: Unpack[EntryFields]) -> None:
        await self._activity(contract.RECORD_EVENT, self._entry(event, actor, detail, **fields))

    def _entry(self, event: str, actor: str, detail: dict[str, Any], **fields: Unpack[EntryFields]) -> AuditEntry:
        """The next entry of the audit log (it takes the next sequence number)."""
        return AuditEntry(
            ticket_id=self.state.ticket_id,
            seq=self._next_seq(),
            event=event,
            actor=actor,
            at=workflow.now(),
            detail=detail,
            message=fields.get("message"),
            ticket_update=fields.get("update") or {},
            sla_events=fields.get("sla") or [],
        )

    async def _notify(
        self, template: str, to: str, *, key: str | None = None, context: dict[str, Any] | None = None
    ) -> None:
        await self._send(self._note(template, to, key, context))

    def _note(
        self, template: str, to: str, key: str | None, context: dict[str, Any] | None, seq: int | None = None
    ) -> Notification:
        """A notice keyed, unless `key` says otherwise, by the audit entry it announces (`seq`, by default the
        latest)."""
        s = self.state
        return Notification(
            key=key or f"{template}:{s.ticket_id}:{s.audit_seq if seq is None else seq}:{to}",
            ticket_id=s.ticket_id,
            template=template,
            to=to,
            context=context or {},
        )

    async def _send(self, note: Notification) -> None:
        if not self._since(PATCH_MAIL_IN_BACKGROUND):
            await self._deliver(note)  # histories from before the patch waited for every mail
            return
        after = self._customer_mail if note.to == "customer" else None
        self._mail_in_flight += 1
        task = asyncio.create_task(self._deliver_in_background(note, after))
        if note.to == "customer":
            self._customer_mail = task

    async def _deliver_in_background(self, note: Notification, after: asyncio.Task[None] | None) -> None:
        try:
            if after is not None:
                await after  # the customer reads our mails in the order we wrote them
            try:
                await self._deliver(note)
            except ActivityError as err:  # nothing retryable left (the ticket row is gone, a bad template)
                cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err)
                await self._record(
                    "notification_failed", SYSTEM, {"template": note.template, "to": note.to, "error": cause}
                )
        finally:
            self._mail_in_flight -= 1

    async def _deliver(self, note: Notification) -> NotificationResult:
        result: NotificationResult = await workflow.execute_activity(
            contract.NOTIFY,
            note,
            result_type=NotificationResult,
            start_to_close_timeout=MAIL_TIMEOUT,
            retry_policy=MAIL_RETRY,
        )
        return result

    def _publish_search_attributes(self) -> None:
        s = self.state
        due = [d for c in s.sla.values() if (d := c.due_at(self._cal)) is not None]
        wanted: dict[str, Any] = {
            search.TICKET_STATUS.name: (search.TICKET_STATUS, str(s.status)),
            search.TICKET_TIER.name: (search.TICKET_TIER, s.tier),
            search.SLA_BREACHED.name: (search.SLA_BREACHED, s.sla_breached),
            search.SLA_DUE_AT.name: (search.SLA_DUE_AT, min(due) if due else None),
        }
        if s.department:
            wanted[search.DEPARTMENT.name] = (search.DEPARTMENT, s.department)
        if s.priority:
            wanted[search.TICKET_PRIORITY.name] = (search.TICKET_PRIORITY, str(s.priority))
        if s.channel:
            wanted[search.CHANNEL.name] = (search.CHANNEL, str(s.channel))
        if s.category:
            wanted[search.TICKET_CATEGORY.name] = (search.TICKET_CATEGORY, s.category)
        updates = []
        for name, (key, value) in wanted.items():
            if self._published.get(name, ...) != value:
                self._published[name] = value
                updates.append(key.value_unset() if value is None else key.value_set(value))
        if updates:
            workflow.upsert_search_attributes(updates)

    # --- messages ----------------------------------------------------------------------------------

    def _require(self, *allowed: Status, action: str) -> None:
        if self.state.status not in allowed:
            names = ", ".join(str(a) for a in allowed)
            raise _invalid(f"cannot {action} a ticket that is {self.state.status} (allowed when: {names})")

    @workflow.query(name=contract.STATE_QUERY)
    def get_state(self) -> TicketState:
        """The full state, with every clock's elapsed time and due instant worked out for now."""
        s, now, cal = self.state, workflow.now(), self._cal
        clocks = list(s.sla.values()) + ([s.tier_clock] if s.tier_clock else [])
        views = [
            ClockView(
                metric=c.metric,
                as_of=now,
                counts="business hours" if c.business else "calendar",
                target_seconds=c.target_seconds,
                elapsed_seconds=round(c.elapsed(now, cal) if c.active else c.elapsed_before, 3),
                paused=c.paused,
                due_at=c.due_at(cal),
                breached=c.breached,
                met_at=c.fulfilled_at,
                reminders_sent=list(c.reminders_sent),
            )
            for c in clocks
        ]
        return s.model_copy(update={"clocks": views, "mail_in_flight": self._mail_in_flight})

    @workflow.update(name=contract.AGENT_REPLY)
    async def agent_reply(self, req: AgentReply) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, Status.PENDING, action="reply to")
            s, now = self.state, workflow.now()
            await self._record_overdue(("first_response", "next_reply"), now)
            update: dict[str, Any] = {}
            events: list[SlaEvent] = []
            first = s.sla.get("first_response")
            if first and first.active:
                if s.sla_v2:
                    events += self._fulfil(("first_response",), now)
                else:
                    first.fulfilled_at = now
                s.first_response_at = now
                update["first_response_at"] = now
            if s.sla_v2:
                events += self._fulfil(("next_reply",), now)
            s.messages += 1
            if req.pend and s.status == Status.OPEN:
                s.status = Status.PENDING
                self._enter_pending(now)
                events += self._pause_clocks(now)
                update["status"] = Status.PENDING
            await self._record(
                "agent_reply",
                req.agent,
                {"pend": req.pend, "status": s.status},
                update=update,
                message=MessageRecord(author_kind="agent", author=req.agent, body=req.body),
                sla=events,
            )
            await self._notify("agent_reply", "customer", context={"agent": req.agent, "seq": s.audit_seq})
            self._changed = True
        return self.state

    @agent_reply.validator
    def _validate_agent_reply(self, req: AgentReply) -> None:
        self._require(Status.OPEN, Status.PENDING, action="reply to")

    @workflow.update(name=contract.CUSTOMER_REPLY)
    async def customer_reply(self, req: CustomerReply) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, Status.PENDING, Status.RESOLVED, action="add a customer reply to")
            self._validate_customer_reply(req)
            s, now = self.state, workflow.now()
            s.messages += 1
            if req.external_message_id:  # a mail gateway may deliver the same reply twice
                s.recent_message_ids = [*s.recent_message_ids[-(RECENT_MESSAGE_IDS - 1) :], req.external_message_id]
            before = s.status
            update: dict[str, Any] = {}
            events: list[SlaEvent] = []
            if before == Status.PENDING:
                s.status = Status.OPEN
                s.pending_since = None
                events += self._resume_clocks(now)
                update["status"] = Status.OPEN
            events += self._start_next_reply(now)
            await self._record(
                "customer_reply",
                "customer",
                {"status_before": before},
                update=update,
                message=MessageRecord(
                    author_kind="customer",
                    author="customer",
                    body=req.body,
                    external_message_id=req.external_message_id,
                ),
                sla=events,
            )
            if before == Status.RESOLVED:
                await self._reopen("customer", "customer replied within the reopen window")
            self._changed = True
        return self.state

    def _start_next_reply(self, now: datetime) -> list[SlaEvent]:
        """A customer message after an agent's reply starts the next-reply clock; while one runs,
        it keeps counting from the oldest unanswered message."""
        s = self.state
        if not s.sla_v2 or s.policy is None or s.policy.next_reply_seconds is None or s.first_response_at is None:
            return []
        current = s.sla.get("next_reply")
        if current is not None and current.active:
            return []
        clock = self._new_clock("next_reply", s.policy.next_reply_seconds, now)
        s.sla["next_reply"] = clock
        return [self._event(clock, "started", now)]

    @customer_reply.validator
    def _validate_customer_reply(self, req: CustomerReply) -> None:
        self._require(Status.OPEN, Status.PENDING, Status.RESOLVED, action="add a customer reply to")
        if req.external_message_id and req.external_message_id in self.state.recent_message_ids:
            raise ApplicationError(
                f"message {req.external_message_id} is already on this ticket",
                type=contract.DUPLICATE_MESSAGE,
                non_retryable=True,
            )

    @workflow.update(name=contract.NOTE)
    async def note(self, req: InternalNote) -> TicketState:
        async with self._lock:
            self._validate_note(req)
            await self._record(
                "internal_note",
                req.agent,
                {},
                message=MessageRecord(author_kind="note", author=req.agent, body=req.body),
            )
        return self.state

    @note.validator
    def _validate_note(self, req: InternalNote) -> None:
        self._require(Status.OPEN, Status.PENDING, Status.RESOLVED, action="add a note to")

    @workflow.update(name=contract.ASSIGN)
    async def assign(self, req: Assign) -> TicketState:
        async with self._lock:
            self._validate_assign(req)
            s = self.state
            before, s.assignee = s.assignee, req.agent
            await self._record(
                "assigned",
                req.actor,
                {"from": before, "to": req.agent, "reason": req.reason},
                update={"assignee": req.agent},
            )
            await self._notify_staff("escalation", "assignee", {"cause": f"assigned to you by {req.actor}"})
            self._changed = True
        return self.state

    @assign.validator
    def _validate_assign(self, req: Assign) -> None:
        self._require(Status.OPEN, Status.PENDING, action="assign")
        known = self.state.policy.agents if self.state.policy else []
        if known and req.agent not in known:
            raise _invalid(f"{req.agent!r} is not an agent of {self.state.department} (one of: {', '.join(known)})")
        if req.agent == self.state.assignee:
            raise _invalid(f"the ticket is already assigned to {req.agent}")

    @workflow.update(name=contract.PEND)
    async def pend(self, req: PendRequest) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, action="pend")
            self.state.status = Status.PENDING
            self._enter_pending(workflow.now())
            events = self._pause_clocks(workflow.now())
            await self._record(
                "pended", req.agent, {"reason": req.reason}, update={"status": Status.PENDING}, sla=events
            )
            self._changed = True
        return self.state

    @pend.validator
    def _validate_pend(self, req: PendRequest) -> None:
        self._require(Status.OPEN, action="pend")

    @workflow.update(name=contract.RESOLVE)
    async def resolve(self, req: ResolveRequest) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, Status.PENDING, action="resolve")
            s, now = self.state, workflow.now()
            assert s.policy is not None
            await self._record_overdue(("resolution", "next_reply"), now)
            if s.sla_v2:
                events = self._fulfil(("resolution", "tier", "next_reply"), now) + self._pause_clocks(now)
            else:
                events = self._pause_clocks(now)
                for clock in self._timed_clocks():
                    if clock.metric in ("resolution", "tier"):
                        clock.fulfilled_at = now
            s.status, s.resolved_at, s.resolved_by = Status.RESOLVED, now, req.agent
            s.resolutions += 1
            s.survey_due_at = now + timedelta(seconds=s.policy.csat_delay_seconds)
            s.close_at = s.survey_due_at + timedelta(seconds=s.policy.csat_window_seconds)
            await self._record(
                "resolved",
                req.agent,
                {"resolution": req.resolution, "n": s.resolutions, "tier": s.tier},
                update={"status": Status.RESOLVED, "resolved_at": now},
                sla=events,
            )
            await self._notify("resolved", "customer", key=f"resolved:{s.ticket_id}:{s.resolutions}")
            self._changed = True
        return self.state

    @resolve.validator
    def _validate_resolve(self, req: ResolveRequest) -> None:
        self._require(Status.OPEN, Status.PENDING, action="resolve")

    @workflow.update(name=contract.REOPEN)
    async def reopen(self, req: ReopenRequest) -> TicketState:
        async with self._lock:
            self._require(Status.RESOLVED, action="reopen")
            await self._reopen(req.actor, req.reason)
            self._changed = True
        return self.state

    @reopen.validator
    def _validate_reopen(self, req: ReopenRequest) -> None:
        self._require(Status.RESOLVED, action="reopen")

    async def _reopen(self, actor: str, reason: str) -> None:
        s, now = self.state, workflow.now()
        assert s.policy is not None
        s.status = Status.OPEN
        s.survey_due_at = s.close_at = None  # an unsent survey is cancelled
        s.survey_sent_at = None  # and so is its reminder
        s.sla["resolution"] = self._new_clock("resolution", s.policy.resolution_seconds, now)
        s.tier_clock = self._new_clock("tier", s.policy.tier_budget_seconds[s.tier], now)
        await self._record(
            "reopened",
            actor,
            {"reason": reason, "resolution": s.resolutions},
            update={"status": Status.OPEN, "resolved_at": None},
            sla=[self._event(s.sla["resolution"], "started", now)],
        )
        if s.notices_v3:
            await self._notify("reopened", "customer", key=f"reopened:{s.ticket_id}:{s.resolutions}")

    @workflow.update(name=contract.ESCALATE)
    async def escalate(self, req: EscalateRequest) -> TicketState:
        async with self._lock:
            self._validate_escalate(req)
            await self._escalate(self.state.tier + 1, "manual", f"{req.actor}: {req.reason}")
            self._changed = True
        return self.state

    @escalate.validator
    def _validate_escalate(self, req: EscalateRequest) -> None:
        self._require(Status.OPEN, Status.PENDING, action="escalate")
        if self.state.tier >= MAX_TIER:
            raise _invalid("the ticket is already at tier 4, the highest tier")

    @workflow.update(name=contract.REPORT_BOUNCE)
    async def report_bounce(self, req: BounceReport) -> TicketState:
        if self.state.status == Status.NEW and self._since(PATCH_OPEN_AS_LOCAL_STEP):
            # The one update a ticket still opening accepts (the acknowledgement's bounce can be back before the
            # opening step has returned): its entry takes the number after the opening's, not one of them.
            await workflow.wait_condition(lambda: self.state.status != Status.NEW)
        async with self._lock:
            self._validate_report_bounce(req)
            detail = {"message_id": req.message_id, "diagnostic": req.diagnostic}
            await self._record("notification_bounced", "mail-system", detail)
        return self.state

    @report_bounce.validator
    def _validate_report_bounce(self, req: BounceReport) -> None:
        if f".{self.state.ticket_id}" not in req.message_id or not req.message_id.endswith("@ticketflow>"):
            raise _invalid(f"{req.message_id} is not a message of ticket {self.state.ticket_id}")

    @workflow.update(name=contract.RATE)
    async def rate(self, req: RateRequest) -> TicketState:
        async with self._lock:
            self._require(Status.RESOLVED, action="rate")
            s, now = self.state, workflow.now()
            assert s.department is not None
            self._validate_rate(req)
            rating = Rating(
                score=req.score,
                raw=req.rating,
                resolution=s.resolutions,
                agent=s.resolved_by,
                tier=s.tier,
                department=s.department,
                at=now,
                reason=req.reason,
                via="survey" if req.nonce else "agent",
            )
            if req.nonce:
                s.survey_nonces = [*s.survey_nonces[-(RECENT_SURVEY_NONCES - 1) :], req.nonce]
            s.ratings = [r for r in s.ratings if r.resolution != s.resolutions] + [rating]
            await self._activity(
                contract.RECORD_RATING,
                RatingRecord(ticket_id=s.ticket_id, seq=self._next_seq(), rating=rating, comment=req.comment),
            )
            self._changed = True
        return self.state

    @rate.validator
    def _validate_rate(self, req: RateRequest) -> None:
        """A survey answer counts for the resolution its link was signed for, once per form."""
        s = self.state
        if req.resolution is not None and req.resolution != s.resolutions:
            raise ApplicationError(
                f"this survey was for an earlier resolution of the ticket (#{req.resolution}, now #{s.resolutions})",
                type=contract.SURVEY_CLOSED,
                non_retryable=True,
            )
        if s.status == Status.CLOSED and req.resolution is not None:
            raise ApplicationError("the survey has closed", type=contract.SURVEY_CLOSED, non_retryable=True)
        self._require(Status.RESOLVED, action="rate")
        if req.nonce and req.nonce in s.survey_nonces:
            raise ApplicationError(
                "this answer was already recorded", type=contract.DUPLICATE_ANSWER, non_retryable=True
            )

    # --- live policy changes: every pending deadline is recomputed, none goes stale ---------------

    async def _policy_for(self, department: str, priority: Priority) -> Policy:
        try:
            policy: Policy = await self._activity(
                contract.LOAD_POLICY,
                PolicyRequest(department=department, priority=priority, customer_type=self.state.customer_type),
                Policy,
            )
        except ActivityError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(err)
            raise _invalid(message) from err
        return policy

    def _apply_policy(self, policy: Policy, now: datetime) -> list[SlaEvent]:
        """Keep what each clock has used (measured on the old calendar), take the new targets,
        calendar and counting mode from here on."""
        s = self.state
        clocks = self._timed_clocks()
        running = {id(c) for c in clocks if c.running_since is not None}
        for clock in clocks:
            clock.pause(now, self._cal)
        s.policy = policy
        events = []
        for clock in clocks:
            target = policy.tier_budget_seconds[s.tier] if clock.metric == "tier" else policy.target(clock.metric)
            if target is None:  # the metric no longer applies to this ticket
                clock.fulfilled_at = now
                continue
            clock.target_seconds = target
            clock.business = policy.business.get(clock.metric, False)
            if clock.metric != "tier":
                clock.reminder_fractions = list(policy.reminder_fractions)
            if id(clock) in running:
                clock.resume(now)
            events.append(self._event(clock, "retargeted", now))
        return events

    @workflow.update(name=contract.CHANGE_PRIORITY)
    async def change_priority(self, req: ChangePriority) -> TicketState:
        async with self._lock:
            self._validate_change_priority(req)
            s, now = self.state, workflow.now()
            assert s.department is not None
            policy = await self._policy_for(s.department, req.priority)
            before, s.priority = s.priority, req.priority
            events = self._apply_policy(policy, now)
            await self._record(
                "priority_changed",
                req.actor,
                {"from": before, "to": req.priority, "reason": req.reason},
                update={"priority": req.priority},
                sla=events,
            )
            self._changed = True
        return self.state

    @change_priority.validator
    def _validate_change_priority(self, req: ChangePriority) -> None:
        self._require(Status.OPEN, Status.PENDING, action="change the priority of")
        if req.priority == self.state.priority:
            raise _invalid(f"the ticket is already {req.priority}")

    @workflow.update(name=contract.TRANSFER)
    async def transfer(self, req: Transfer) -> TicketState:
        async with self._lock:
            self._validate_transfer(req)
            s, now = self.state, workflow.now()
            assert s.priority is not None
            policy = await self._policy_for(req.department, s.priority)  # rejects an unknown department
            before, s.department = s.department, req.department
            events = self._apply_policy(policy, now)
            await self._route(s.tier, now)
            await self._record(
                "transferred",
                req.actor,
                {"from": before, "to": req.department, "reason": req.reason},
                update={"department": req.department},
                sla=events,
            )
            await self._notify_staff("escalation", "assignee", {"cause": f"transferred from {before}: {req.reason}"})
            self._changed = True
        return self.state

    @transfer.validator
    def _validate_transfer(self, req: Transfer) -> None:
        self._require(Status.OPEN, Status.PENDING, action="transfer")
        if req.department == self.state.department:
            raise _invalid(f"the ticket is already in {req.department}")
        known = self.state.policy.departments if self.state.policy else []
        if known and req.department not in known:
            raise _invalid(f"unknown department {req.department!r} (one of: {', '.join(known)})")

    @workflow.update(name=contract.REFRESH_POLICY)
    async def refresh_policy(self, req: RefreshPolicy) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, Status.PENDING, action="refresh the policy of")
            s, now = self.state, workflow.now()
            assert s.department is not None and s.priority is not None
            events = self._apply_policy(await self._policy_for(s.department, s.priority), now)
            await self._record("policy_refreshed", req.actor, {"reason": req.reason}, sla=events)
            self._changed = True
        return self.state

    @workflow.update(name=contract.DEESCALATE)
    async def deescalate(self, req: EscalateRequest) -> TicketState:
        async with self._lock:
            self._validate_deescalate(req)
            await self._escalate(self.state.tier - 1, "manual", f"{req.actor}: {req.reason}")
            self._changed = True
        return self.state

    @deescalate.validator
    def _validate_deescalate(self, req: EscalateRequest) -> None:
        self._require(Status.OPEN, Status.PENDING, action="de-escalate")
        if self.state.tier <= 1:
            raise _invalid("the ticket is already at tier 1, the lowest tier")
