"""The ticket lifecycle: one durable workflow per ticket.

The workflow owns policy and time: it decides when SLA reminders, breaches, tier escalations,
surveys and the close happen. Every side effect (database, email) is an activity keyed by the
ticket id and an audit sequence number, so retries and replays change nothing twice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ticketflow import contract, search
    from ticketflow.models import (
        AgentReply,
        AuditEntry,
        Categorisation,
        CategoriseRequest,
        CustomerReply,
        EscalateRequest,
        Escalation,
        IntakeRequest,
        IntakeResult,
        MessageRecord,
        Notification,
        NotificationResult,
        PendRequest,
        Policy,
        PolicyRequest,
        RateRequest,
        Rating,
        RatingRecord,
        ReopenRequest,
        ResolveRequest,
        RouteRequest,
        Routing,
        SlaClock,
        Status,
        TicketState,
        TicketWorkflowInput,
    )

T = TypeVar("T")
MAX_TIER = 4
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

    # --- the lifecycle ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: TicketWorkflowInput) -> TicketState:
        if input.resume is None:
            await self._open(input.ticket or {})
        self._publish_search_attributes()

        while self.state.status != Status.CLOSED:
            await self._sleep_until_next_event()
            async with self._lock:
                await self._fire_due_events()
            self._publish_search_attributes()
            if workflow.info().is_continue_as_new_suggested() and not self._closed():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(TicketWorkflowInput(resume=self.state))

        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state

    async def _open(self, raw: dict[str, Any]) -> None:
        now = workflow.now()
        try:
            intake = await self._activity(
                contract.INTAKE,
                IntakeRequest(ticket_id=self.state.ticket_id, raw=raw, received_at=now),
                IntakeResult,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TICKET:
                # Fail the workflow with the field-level message; nothing was persisted.
                raise ApplicationError(
                    cause.message, *cause.details, type=contract.INVALID_TICKET, non_retryable=True
                ) from err
            raise
        s = self.state
        s.channel, s.customer_type, s.created_at = intake.channel, intake.customer_type, intake.created_at
        s.audit_seq = max(s.audit_seq, 1)  # seq 1 is the 'created' entry written by intake
        s.messages = 1  # the customer's opening message

        cat = await self._activity(
            contract.CATEGORISE, CategoriseRequest(ticket_id=s.ticket_id, seq=self._next_seq()), Categorisation
        )
        s.category, s.department, s.priority, s.language = cat.category, cat.department, cat.priority, cat.language
        s.categorisation_reasons = cat.reasons
        s.policy = await self._load_policy()

        start = workflow.now()
        s.sla = {
            "first_response": self._new_clock("first_response", s.policy.first_response_seconds, start),
            "resolution": self._new_clock("resolution", s.policy.resolution_seconds, start),
        }
        await self._route(1, start)
        s.status = Status.OPEN
        await self._record("opened", SYSTEM, {"status": Status.OPEN}, update={"status": Status.OPEN})
        await self._notify("acknowledgement", "customer", key=f"ack:{s.ticket_id}")

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
                left = fraction * clock.target_seconds - clock.elapsed(now)
                candidates.append(now + timedelta(seconds=max(0.0, left)))
                break
        if s.status == Status.RESOLVED:
            if s.survey_due_at and s.survey_sent_for < s.resolutions and not self._rated_current():
                candidates.append(s.survey_due_at)
            if s.close_at:
                candidates.append(s.close_at)
        return min(candidates) if candidates else None

    def _next_event_name(self) -> str:
        return f"next ticket event ({self.state.status})"

    async def _fire_due_events(self) -> None:
        s, now = self.state, workflow.now()
        for clock in list(s.sla.values()):
            await self._fire_sla_thresholds(clock, now)
        tier = s.tier_clock
        if tier and tier.active and not tier.breached and tier.elapsed(now) >= tier.target_seconds:
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
                await self._notify("survey", "customer", key=f"csat:{s.ticket_id}:{s.resolutions}")
                await self._record("survey_sent", SYSTEM, {"resolution": s.resolutions})
            if s.close_at and now >= s.close_at:
                s.status = Status.CLOSED
                await self._record("closed", SYSTEM, {}, update={"status": Status.CLOSED, "closed_at": now})

    async def _fire_sla_thresholds(self, clock: SlaClock, now: datetime) -> None:
        """Announce the highest threshold the clock has reached, marking lower ones as passed.

        Elapsed time is frozen at a pause, so a threshold crossed just before a pause is still
        announced even when the pause arrived first (the Alga PSA bug)."""
        if not clock.active:
            return
        due = [f for f in clock.pending_thresholds() if clock.elapsed(now) >= f * clock.target_seconds]
        if not due:
            return
        top = max(due)
        skipped = [f for f in due if f != top]
        clock.reminders_sent.extend(f for f in due if f < 1.0)
        detail = {
            "metric": clock.metric,
            "fraction": top,
            "target_seconds": clock.target_seconds,
            "elapsed_seconds": round(clock.elapsed(now), 3),
            "superseded": skipped,
        }
        if top >= 1.0:
            clock.breached = True
            self.state.sla_breached = True
            await self._record("sla_breach", SYSTEM, detail, update={"sla_breached": True})
            for to in ("assignee", "lead"):
                await self._notify("sla_breach", to, context=detail)
        else:
            await self._record("sla_reminder", SYSTEM, detail)
            await self._notify("sla_reminder", "assignee", context=detail)

    # --- steps -------------------------------------------------------------------------------------

    async def _route(self, tier: int, at: datetime) -> Routing:
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
            ),
            Routing,
        )
        s.tier, s.queue, s.assignee = routing.tier, routing.queue, routing.agent
        running = s.status != Status.PENDING
        s.tier_clock = self._new_clock("tier", s.policy.tier_budget_seconds[tier], at, running=running)
        return routing

    async def _escalate(self, to_tier: int, cause: str, reason: str) -> None:
        s, now = self.state, workflow.now()
        from_tier = s.tier
        s.escalations.append(Escalation(from_tier=from_tier, to_tier=to_tier, cause=cause, reason=reason, at=now))
        routing = await self._route(to_tier, now)
        await self._record(
            "escalated",
            SYSTEM if cause == "timer" else cause,
            {"from_tier": from_tier, "to_tier": to_tier, "cause": cause, "reason": reason, "agent": routing.agent},
        )
        context = {"from_tier": from_tier, "to_tier": to_tier, "cause": cause, "reason": reason}
        await self._notify("escalation", "assignee", context=context)
        if to_tier == MAX_TIER:
            await self._notify("escalation", "lead", context=context)

    async def _load_policy(self) -> Policy:
        s = self.state
        assert s.department is not None and s.priority is not None
        return await self._activity(
            contract.LOAD_POLICY,
            PolicyRequest(department=s.department, priority=s.priority, customer_type=s.customer_type),
            Policy,
        )

    def _new_clock(self, metric: str, target: int, at: datetime, running: bool = True) -> SlaClock:
        fractions = self.state.policy.reminder_fractions if self.state.policy and metric != "tier" else []
        return SlaClock(
            metric=metric,
            target_seconds=target,
            started_at=at,
            running_since=at if running else None,
            reminder_fractions=fractions,
        )

    def _pause_clocks(self, now: datetime) -> None:
        for clock in self._timed_clocks():
            if clock.running_since is not None:
                clock.elapsed_before = clock.elapsed(now)
                clock.running_since = None

    def _resume_clocks(self, now: datetime) -> None:
        for clock in self._timed_clocks():
            if clock.running_since is None:
                clock.running_since = now

    def _rated_current(self) -> bool:
        return any(r.resolution == self.state.resolutions for r in self.state.ratings)

    # --- activity plumbing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.state.audit_seq += 1
        return self.state.audit_seq

    async def _activity(self, name: str, arg: Any, result_type: type[T] | None = None) -> T:
        result: T = await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        return result

    async def _record(
        self,
        event: str,
        actor: str,
        detail: dict[str, Any],
        *,
        update: dict[str, Any] | None = None,
        message: MessageRecord | None = None,
    ) -> None:
        entry = AuditEntry(
            ticket_id=self.state.ticket_id,
            seq=self._next_seq(),
            event=event,
            actor=actor,
            at=workflow.now(),
            detail=detail,
            message=message,
            ticket_update=update or {},
        )
        await self._activity(contract.RECORD_EVENT, entry)

    async def _notify(
        self, template: str, to: str, *, key: str | None = None, context: dict[str, Any] | None = None
    ) -> NotificationResult:
        s = self.state
        note = Notification(
            key=key or f"{template}:{s.ticket_id}:{s.audit_seq}:{to}",
            ticket_id=s.ticket_id,
            template=template,
            to=to,
            context=context or {},
        )
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
        due = [d for c in s.sla.values() if (d := c.due_at(workflow.now())) is not None]
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
        return self.state

    @workflow.update(name=contract.AGENT_REPLY)
    async def agent_reply(self, req: AgentReply) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, Status.PENDING, action="reply to")
            s, now = self.state, workflow.now()
            update: dict[str, Any] = {}
            first = s.sla.get("first_response")
            if first and first.active:
                first.fulfilled_at = now
                s.first_response_at = now
                update["first_response_at"] = now
            s.messages += 1
            if req.pend and s.status == Status.OPEN:
                s.status = Status.PENDING
                self._pause_clocks(now)
                update["status"] = Status.PENDING
            await self._record(
                "agent_reply",
                req.agent,
                {"pend": req.pend, "status": s.status},
                update=update,
                message=MessageRecord(author_kind="agent", author=req.agent, body=req.body),
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
            s, now = self.state, workflow.now()
            s.messages += 1
            before = s.status
            update: dict[str, Any] = {}
            if before == Status.PENDING:
                s.status = Status.OPEN
                self._resume_clocks(now)
                update["status"] = Status.OPEN
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
            )
            if before == Status.RESOLVED:
                await self._reopen("customer", "customer replied within the reopen window")
            self._changed = True
        return self.state

    @customer_reply.validator
    def _validate_customer_reply(self, req: CustomerReply) -> None:
        self._require(Status.OPEN, Status.PENDING, Status.RESOLVED, action="add a customer reply to")

    @workflow.update(name=contract.PEND)
    async def pend(self, req: PendRequest) -> TicketState:
        async with self._lock:
            self._require(Status.OPEN, action="pend")
            self.state.status = Status.PENDING
            self._pause_clocks(workflow.now())
            await self._record("pended", req.agent, {"reason": req.reason}, update={"status": Status.PENDING})
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
            self._pause_clocks(now)
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
        s.sla["resolution"] = self._new_clock("resolution", s.policy.resolution_seconds, now)
        s.tier_clock = self._new_clock("tier", s.policy.tier_budget_seconds[s.tier], now)
        await self._record(
            "reopened",
            actor,
            {"reason": reason, "resolution": s.resolutions},
            update={"status": Status.OPEN, "resolved_at": None},
        )

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

    @workflow.update(name=contract.RATE)
    async def rate(self, req: RateRequest) -> TicketState:
        async with self._lock:
            self._require(Status.RESOLVED, action="rate")
            s, now = self.state, workflow.now()
            assert s.department is not None
            rating = Rating(
                score=req.score,
                raw=req.rating,
                resolution=s.resolutions,
                agent=s.resolved_by,
                tier=s.tier,
                department=s.department,
                at=now,
            )
            s.ratings = [r for r in s.ratings if r.resolution != s.resolutions] + [rating]
            await self._activity(
                contract.RECORD_RATING,
                RatingRecord(ticket_id=s.ticket_id, seq=self._next_seq(), rating=rating, comment=req.comment),
            )
            self._changed = True
        return self.state

    @rate.validator
    def _validate_rate(self, req: RateRequest) -> None:
        self._require(Status.RESOLVED, action="rate")
