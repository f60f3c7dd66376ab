"""The client SDK for integrations: open and drive tickets through Temporal in a few lines.

client = await TicketClient.connect("127.0.0.1:7233")
opened = await client.open({"subject": ..., "body": ..., "customer": {...}, "channel": "email"})
await client.reply(opened.ticket_id, agent="anna", body="Fixed, please retry.")
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ticketflow import access, contract, search
from ticketflow.access import Viewer
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import (
    AgentReply,
    Assign,
    BounceReport,
    ChangePriority,
    CustomerReply,
    EscalateRequest,
    InternalNote,
    PendRequest,
    Priority,
    RateRequest,
    RefreshPolicy,
    ReopenRequest,
    ResolveRequest,
    Status,
    TicketIn,
    TicketState,
    TicketWorkflowInput,
    Transfer,
)
from ticketflow.temporal import connect

T = TypeVar("T")


class TicketError(Exception):
    """Base of every error the SDK raises on purpose."""


class TicketNotFound(TicketError):
    pass


class InvalidTransition(TicketError):
    pass


class DuplicateMessage(TicketError):
    """The same external message was already added to the ticket: nothing was done again."""


class SurveyClosed(TicketError):
    """The survey answer came after its survey closed, or for an earlier resolution."""


class DuplicateAnswer(TicketError):
    """This survey form was already submitted: nothing was recorded again."""


class AccessDenied(TicketError, access.AccessDenied):
    """The client's viewer may not see this ticket or department (see ticketflow.access)."""


class TicketValidationError(TicketError, ValueError):
    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class OpenedTicket(BaseModel):
    ticket_id: str
    workflow_id: str
    duplicate: bool


class TicketSummary(BaseModel):
    """What `list` returns: read from search attributes, no personal data."""

    ticket_id: str
    status: str | None
    department: str | None
    priority: str | None
    tier: int | None
    sla_breached: bool | None
    sla_due_at: datetime | None
    channel: str | None
    category: str | None
    started_at: datetime


def validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(ticket)'}: {e['msg']}" for e in err.errors())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def visibility_query(
    *,
    department: str | None = None,
    status: Status | str | None = None,
    priority: Priority | str | None = None,
    tier: int | None = None,
    min_tier: int | None = None,
    breached: bool | None = None,
    due_within: timedelta | None = None,
    now: datetime | None = None,
    running_only: bool = False,
    departments: Sequence[str] | None = None,
) -> str:
    """`departments` restricts to a set (a viewer's scope); it must not be empty, which no query can say."""
    parts = [f"WorkflowType = {_quote(contract.WORKFLOW_TYPE)}"]
    if department:
        parts.append(f"{search.DEPARTMENT.name} = {_quote(department)}")
    if departments is not None:
        if not departments:
            raise ValueError("departments must name at least one department")
        parts.append(f"{search.DEPARTMENT.name} IN ({', '.join(_quote(d) for d in departments)})")
    if status:
        parts.append(f"{search.TICKET_STATUS.name} = {_quote(str(Status(status)))}")
    if priority:
        parts.append(f"{search.TICKET_PRIORITY.name} = {_quote(str(Priority(priority)))}")
    if tier is not None:
        parts.append(f"{search.TICKET_TIER.name} = {int(tier)}")
    if min_tier is not None:
        parts.append(f"{search.TICKET_TIER.name} >= {int(min_tier)}")
    if breached is not None:
        parts.append(f"{search.SLA_BREACHED.name} = {'true' if breached else 'false'}")
    if due_within is not None:
        limit = ((now or datetime.now().astimezone()) + due_within).isoformat()
        parts.append(f"{search.SLA_DUE_AT.name} <= {_quote(limit)}")
    if running_only:
        parts.append("ExecutionStatus = 'Running'")
    return " AND ".join(parts)


class TicketClient:
    """Without a viewer the client acts as an operator and sees every ticket. With one (an agent or lead,
    ticketflow.access), reading and acting are limited to the viewer's departments."""

    def __init__(self, client: Client, task_queue: str = "ticketflow", *, viewer: Viewer | None = None) -> None:
        self.client = client
        self.task_queue = task_queue
        self.viewer = viewer or Viewer.operator()

    @classmethod
    async def connect(
        cls,
        address: str = "127.0.0.1:7233",
        namespace: str = "default",
        task_queue: str = "ticketflow",
        *,
        viewer: Viewer | None = None,
    ) -> TicketClient:
        return cls(await connect(address, namespace), task_queue, viewer=viewer)

    def as_viewer(self, viewer: Viewer) -> TicketClient:
        """The same connection, scoped to `viewer`'s departments."""
        return TicketClient(self.client, self.task_queue, viewer=viewer)

    # --- opening ------------------------------------------------------------------------------------

    async def open(self, ticket: TicketIn | dict[str, Any], *, imported: bool = False) -> OpenedTicket:
        """Validate, then start the ticket's workflow. The same external message id returns the
        existing ticket (duplicate=True) instead of opening a second one."""
        try:
            valid = ticket if isinstance(ticket, TicketIn) else TicketIn.model_validate(ticket)
        except ValidationError as err:
            raise TicketValidationError(
                f"invalid ticket: {validation_message(err)}",
                err.errors(include_url=False, include_context=False, include_input=False),  # type: ignore[arg-type]
            ) from None
        tid = ticket_id_for(valid.external_message_id)
        wid = workflow_id(tid)
        nonce = uuid.uuid4().hex
        try:
            handle = await self.client.start_workflow(
                contract.WORKFLOW_TYPE,
                TicketWorkflowInput(ticket=valid.model_dump(mode="json"), imported=imported),
                id=wid,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                memo={"intake_nonce": nonce},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search.TICKET_STATUS, str(Status.NEW)),
                        SearchAttributePair(search.CHANNEL, str(valid.channel)),
                    ]
                ),
                static_summary=f"Ticket {tid} via {valid.channel}",
            )
        except WorkflowAlreadyStartedError:
            return OpenedTicket(ticket_id=tid, workflow_id=wid, duplicate=True)
        # Servers that know say in the start response whether this call started the run: no second round
        # trip for a new ticket. The SDK keeps that response on the handle without a public accessor.
        response = getattr(handle, "_start_workflow_response", None)
        if getattr(response, "started", False):
            return OpenedTicket(ticket_id=tid, workflow_id=wid, duplicate=False)
        memo = await (await handle.describe()).memo()  # an existing run, or a server that does not say
        return OpenedTicket(ticket_id=tid, workflow_id=wid, duplicate=memo.get("intake_nonce") != nonce)

    # --- reading ------------------------------------------------------------------------------------

    def handle(self, ticket_id: str) -> WorkflowHandle[Any, Any]:
        try:
            return self.client.get_workflow_handle(workflow_id(ticket_id))
        except ValueError as err:
            raise TicketNotFound(str(err)) from None

    async def get(self, ticket_id: str) -> TicketState:
        state: TicketState = await self._call(
            ticket_id, lambda h: h.query(contract.STATE_QUERY, result_type=TicketState)
        )
        self._check(ticket_id, state)
        return state

    async def list(self, *, limit: int = 50, **filters: Any) -> list[TicketSummary]:
        if not self.viewer.is_operator:
            department = filters.pop("department", None)
            scope = self._scope([department] if department else None)
            if not scope:  # a viewer without departments sees nothing (and `IN ()` is no query)
                return []
            filters["departments"] = scope
        query = visibility_query(**filters)
        out: list[TicketSummary] = []
        async for wf in self.client.list_workflows(query, limit=limit):
            sa = wf.typed_search_attributes
            out.append(
                TicketSummary(
                    ticket_id=wf.id.removeprefix("ticket-"),
                    status=sa.get(search.TICKET_STATUS),
                    department=sa.get(search.DEPARTMENT),
                    priority=sa.get(search.TICKET_PRIORITY),
                    tier=sa.get(search.TICKET_TIER),
                    sla_breached=sa.get(search.SLA_BREACHED),
                    sla_due_at=sa.get(search.SLA_DUE_AT),
                    channel=sa.get(search.CHANNEL),
                    category=sa.get(search.TICKET_CATEGORY),
                    started_at=wf.start_time,
                )
            )
        return out

    async def final_state(self, ticket_id: str) -> TicketState:
        """Wait until the ticket's workflow completes (the ticket is closed) and return its last state."""
        handle = self.client.get_workflow_handle(workflow_id(ticket_id), result_type=TicketState)
        state: TicketState = await self._call(ticket_id, lambda _: handle.result())
        self._check(ticket_id, state)  # by the department it closed in
        return state

    async def wait_for(
        self, ticket_id: str, status: Status | str, within: float = 30.0, poll: float = 0.2
    ) -> TicketState:
        """Poll the state query until the ticket reaches `status` (or the workflow has ended in it)."""
        want = Status(status)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            state = await self.get(ticket_id)
            if state.status == want:
                return state
            if loop.time() >= deadline:
                raise TimeoutError(f"ticket {ticket_id} is {state.status}, not {want}, after {within}s")
            await asyncio.sleep(poll)

    # --- acting -------------------------------------------------------------------------------------

    async def reply(self, ticket_id: str, agent: str, body: str, pend: bool = False) -> TicketState:
        return await self._update(ticket_id, contract.AGENT_REPLY, AgentReply, agent=agent, body=body, pend=pend)

    async def customer_reply(self, ticket_id: str, body: str, external_message_id: str | None = None) -> TicketState:
        return await self._update(
            ticket_id, contract.CUSTOMER_REPLY, CustomerReply, body=body, external_message_id=external_message_id
        )

    async def note(self, ticket_id: str, agent: str, body: str) -> TicketState:
        """An internal note: stored with the ticket, never mailed to the customer."""
        return await self._update(ticket_id, contract.NOTE, InternalNote, agent=agent, body=body)

    async def assign(self, ticket_id: str, actor: str, agent: str, reason: str = "") -> TicketState:
        return await self._update(ticket_id, contract.ASSIGN, Assign, actor=actor, agent=agent, reason=reason)

    async def pend(self, ticket_id: str, agent: str, reason: str = "") -> TicketState:
        return await self._update(ticket_id, contract.PEND, PendRequest, agent=agent, reason=reason)

    async def resolve(self, ticket_id: str, agent: str, resolution: str = "") -> TicketState:
        return await self._update(ticket_id, contract.RESOLVE, ResolveRequest, agent=agent, resolution=resolution)

    async def reopen(self, ticket_id: str, actor: str, reason: str = "") -> TicketState:
        return await self._update(ticket_id, contract.REOPEN, ReopenRequest, actor=actor, reason=reason)

    async def escalate(self, ticket_id: str, actor: str, reason: str) -> TicketState:
        return await self._update(ticket_id, contract.ESCALATE, EscalateRequest, actor=actor, reason=reason)

    async def deescalate(self, ticket_id: str, actor: str, reason: str) -> TicketState:
        return await self._update(ticket_id, contract.DEESCALATE, EscalateRequest, actor=actor, reason=reason)

    async def change_priority(
        self, ticket_id: str, actor: str, priority: Priority | str, reason: str = ""
    ) -> TicketState:
        """Recomputes every pending SLA deadline for the new priority."""
        return await self._update(
            ticket_id, contract.CHANGE_PRIORITY, ChangePriority, actor=actor, priority=priority, reason=reason
        )

    async def transfer(self, ticket_id: str, actor: str, department: str, reason: str = "") -> TicketState:
        """Move to another department: re-routed at the same tier, deadlines on its calendar."""
        return await self._update(
            ticket_id, contract.TRANSFER, Transfer, actor=actor, department=department, reason=reason
        )

    async def refresh_policy(self, ticket_id: str, actor: str, reason: str = "") -> TicketState:
        """Apply the current policy file's targets and business hours to a live ticket."""
        return await self._update(ticket_id, contract.REFRESH_POLICY, RefreshPolicy, actor=actor, reason=reason)

    async def report_bounce(self, ticket_id: str, message_id: str, diagnostic: str = "") -> TicketState:
        """Record that one of the ticket's mails bounced (the mail intake calls this for a DSN)."""
        return await self._update(
            ticket_id, contract.REPORT_BOUNCE, BounceReport, message_id=message_id, diagnostic=diagnostic
        )

    async def rate(
        self,
        ticket_id: str,
        rating: int | str,
        comment: str = "",
        *,
        reason: str | None = None,
        resolution: int | None = None,
        nonce: str | None = None,
    ) -> TicketState:
        """Record a CSAT answer (the latest answer per resolution counts). The survey pages pass the
        resolution their link was signed for and the form's one-time nonce."""
        return await self._update(
            ticket_id,
            contract.RATE,
            RateRequest,
            rating=rating,
            comment=comment,
            reason=reason,
            resolution=resolution,
            nonce=nonce,
        )

    async def _update(self, ticket_id: str, name: str, model: type[BaseModel], **fields: Any) -> TicketState:
        try:
            arg = model.model_validate(fields)
        except ValidationError as err:
            raise TicketValidationError(
                f"invalid {name}: {validation_message(err)}",
                err.errors(include_url=False, include_context=False, include_input=False),  # type: ignore[arg-type]
            ) from None
        if not self.viewer.is_operator:
            await self.get(ticket_id)  # an update returns the whole state: a viewer acts on visible tickets only
        return await self._call(ticket_id, lambda h: h.execute_update(name, arg, result_type=TicketState))

    def _check(self, ticket_id: str, state: TicketState) -> None:
        try:
            self.viewer.check(ticket_id, state.department)
        except access.AccessDenied as err:
            raise AccessDenied(str(err)) from None

    def _scope(self, asked: Sequence[str] | None) -> Sequence[str] | None:
        try:
            return self.viewer.scope(asked)
        except access.AccessDenied as err:
            raise AccessDenied(str(err)) from None

    @staticmethod
    async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
        try:
            description = await handle.describe()
        except Exception:  # only a better error message is at stake here
            return False
        return description.status is not None and description.status != WorkflowExecutionStatus.RUNNING

    async def _call(self, ticket_id: str, fn: Callable[[WorkflowHandle[Any, Any]], Awaitable[T]]) -> T:
        handle = self.handle(ticket_id)
        try:
            return await fn(handle)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TRANSITION:
                raise InvalidTransition(cause.message) from None
            if isinstance(cause, ApplicationError) and cause.type == contract.DUPLICATE_MESSAGE:
                raise DuplicateMessage(cause.message) from None
            if isinstance(cause, ApplicationError) and cause.type == contract.SURVEY_CLOSED:
                raise SurveyClosed(cause.message) from None
            if isinstance(cause, ApplicationError) and cause.type == contract.DUPLICATE_ANSWER:
                raise DuplicateAnswer(cause.message) from None
            raise
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                if await self._closed(handle):  # some servers answer NOT_FOUND for a finished workflow
                    raise InvalidTransition(f"ticket {ticket_id} is closed") from None
                raise TicketNotFound(f"no ticket {ticket_id}") from None
            if err.status == RPCStatusCode.FAILED_PRECONDITION or "completed" in str(err).lower():
                raise InvalidTransition(f"ticket {ticket_id} is closed: {err}") from None
            raise
