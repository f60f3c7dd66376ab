"""Department access: agents and leads see only their departments' tickets in the SDK (`list`, `get`,
`final_state`, updates), the CLI (`list`, `show`) and the department report; operators see everything.

The rule itself is pure (ticketflow.access); the rest runs on the real dev server (visibility queries), the
time-skipping server (a ticket run to its close), PostgreSQL (the report) and the CLI through CliRunner."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from starter.cli import app
from starter.client import AccessDenied, TicketClient, TicketError, TicketSummary, visibility_query
from starter.devstack import TemporalDevServer
from tests.conftest import WorkerFactory, wall_clock
from tests.factories import ticket
from ticketflow import access
from ticketflow.access import UnknownViewer, Viewer, resolve_viewer
from ticketflow.config import Config, default_config
from ticketflow.models import Status

BILLING_TICKET = {"subject": "Invoice charged twice", "body": "You charged my card twice for invoice 1234. Refund?"}
SUPPORT_TICKET = {"subject": "Outage: API down", "body": "The API returns 502 errors since this morning, outage."}


@pytest.fixture(scope="module")
def config() -> Config:
    """Calendar hours: the ticket run to its close in the time-skipping test must not wait on opening hours."""
    return wall_clock(default_config())


# --- the rule ----------------------------------------------------------------------------------------------


def with_lead(cfg: Config, department: str, lead: str) -> Config:
    departments = dict(cfg.departments)
    departments[department] = departments[department].model_copy(update={"lead": lead})
    return cfg.model_copy(update={"departments": departments})


def test_no_identity_is_the_operator_who_sees_everything() -> None:
    cfg = default_config()
    for identity in (None, "", "   "):
        viewer = resolve_viewer(cfg, identity)
        assert viewer == Viewer.operator() and viewer.is_operator
    op = Viewer.operator()
    assert op.sees("billing") and op.sees(None)  # not routed yet: operators only
    assert op.scope() is None  # no restriction at all: the query stays as it was
    assert op.scope(["hr", "hr", "it"]) == ["hr", "it"]
    op.check("t1", None)


def test_agents_see_the_departments_they_are_listed_in() -> None:
    cfg = default_config()
    james = resolve_viewer(cfg, "james")
    assert james == Viewer(identity="james", departments=frozenset({"billing"}))
    assert resolve_viewer(cfg, " James@Northwind.EXAMPLE ").departments == frozenset({"billing"})  # e-mail, any case
    assert james.sees("billing") and not james.sees("technical_support") and not james.sees(None)
    assert james.scope() == ["billing"] and james.scope(["billing"]) == ["billing"]
    with pytest.raises(access.AccessDenied, match=r"'james' may not see department 'hr', 'it'; they see billing"):
        james.scope(["billing", "hr", "it"])
    with pytest.raises(access.AccessDenied, match=r"may not see ticket t1 \(department 'hr'\)"):
        james.check("t1", "hr")
    with pytest.raises(access.AccessDenied, match=r"may not see ticket t2 \(no department yet\)"):
        james.check("t2", None)
    james.check("t3", "billing")
    with pytest.raises(FrozenInstanceError):
        james.departments = None  # type: ignore[misc]


def test_leads_see_the_departments_they_lead() -> None:
    cfg = with_lead(default_config(), "it", "james@northwind.example")  # james leads IT without working in it
    assert resolve_viewer(cfg, "james@northwind.example").departments == frozenset({"billing", "it"})
    assert resolve_viewer(cfg, "james").departments == frozenset(
        {"billing", "it"}
    )  # by id: the agent's address leads IT
    boss = with_lead(cfg, "hr", "Boss@Northwind.example")  # a lead who is no agent at all
    assert resolve_viewer(boss, "boss@northwind.example").departments == frozenset({"hr"})
    with pytest.raises(UnknownViewer):
        resolve_viewer(boss, "boss")  # a lead is known by address only


def test_unknown_identity_names_the_known_ids() -> None:
    with pytest.raises(UnknownViewer) as err:
        resolve_viewer(default_config(), "mallory")
    message = str(err.value)
    assert "unknown agent or lead 'mallory'" in message
    assert "known agent ids: ana, andrei, anna," in message and "james" in message and "wei" in message
    assert isinstance(err.value, ValueError)


def test_a_viewer_without_departments_sees_nothing() -> None:
    nobody = Viewer(identity="temp", departments=frozenset())
    assert nobody.scope() == [] and not nobody.sees("billing") and not nobody.sees(None)
    with pytest.raises(access.AccessDenied, match="they see no department"):
        nobody.scope(["billing"])


def test_the_visibility_query_restricts_to_a_set_of_departments() -> None:
    assert visibility_query(departments=["billing", "o'hara"]) == (
        "WorkflowType = 'TicketWorkflow' AND Department IN ('billing', 'o\\'hara')"
    )
    assert "Department IN" not in visibility_query(department="billing")  # the operator's query is unchanged
    with pytest.raises(ValueError, match="at least one department"):
        visibility_query(departments=[])


def test_the_sdk_error_is_a_ticket_error_and_an_access_error() -> None:
    assert issubclass(AccessDenied, TicketError) and issubclass(AccessDenied, access.AccessDenied)


async def test_a_viewer_without_departments_lists_nothing_without_asking_temporal() -> None:
    class NoServer:
        def list_workflows(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no query should be sent")

    scoped = TicketClient(NoServer(), viewer=Viewer(identity="temp", departments=frozenset()))  # type: ignore[arg-type]
    assert await scoped.list(status="open") == []


# --- the SDK on the dev server --------------------------------------------------------------------------


async def poll(fn: Callable[[], Awaitable[list[TicketSummary]]], ok: Callable[[set[str]], bool]) -> set[str]:
    """Visibility is eventually consistent: list again until `ok` holds for the ids listed."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        ids = {r.ticket_id for r in await fn()}
        if ok(ids) or asyncio.get_running_loop().time() > deadline:
            return ids
        await asyncio.sleep(0.2)


async def two_tickets(tickets: TicketClient) -> tuple[str, str]:
    """A billing ticket and a technical-support ticket, routed and visible by department."""
    billing = (await tickets.open(ticket(**BILLING_TICKET))).ticket_id
    support = (await tickets.open(ticket(**SUPPORT_TICKET))).ticket_id
    assert (await tickets.wait_for(billing, Status.OPEN)).department == "billing"
    assert (await tickets.wait_for(support, Status.OPEN)).department == "technical_support"
    seen = await poll(
        lambda: tickets.list(limit=1000, departments=["billing", "technical_support"]),
        lambda ids: {billing, support} <= ids,
    )
    assert {billing, support} <= seen
    return billing, support


@pytest.mark.e2e
async def test_agents_list_and_get_only_their_departments(
    dev_server: TemporalDevServer, dev_client: Client, make_worker: WorkerFactory, task_queue: str, cli_settings: str
) -> None:
    operator = TicketClient(dev_client, task_queue)
    cfg = default_config()
    james = operator.as_viewer(resolve_viewer(cfg, "james"))  # billing
    lead = TicketClient(dev_client, task_queue, viewer=resolve_viewer(cfg, "ines.weber@northwind.example"))
    async with make_worker(dev_client, task_queue):
        billing, support = await two_tickets(operator)

        everything = await operator.list(limit=1000)
        assert {billing, support} <= {r.ticket_id for r in everything}
        mine = await james.list(limit=1000)
        assert billing in {r.ticket_id for r in mine} and support not in {r.ticket_id for r in mine}
        assert mine and {r.department for r in mine} == {"billing"}  # nobody else's, and no unrouted ones
        filtered = await james.list(limit=1000, department="billing", status="open")
        assert billing in {r.ticket_id for r in filtered} and {r.department for r in filtered} == {"billing"}
        led = await lead.list(limit=1000)
        assert support in {r.ticket_id for r in led} and {r.department for r in led} == {"technical_support"}
        with pytest.raises(AccessDenied, match="'james' may not see department 'technical_support'"):
            await james.list(department="technical_support")

        assert (await james.get(billing)).department == "billing"
        assert (await lead.get(support)).department == "technical_support"
        assert (await operator.get(support)).department == "technical_support"
        with pytest.raises(AccessDenied, match=f"may not see ticket {support} \\(department 'technical_support'\\)"):
            await james.get(support)
        with pytest.raises(AccessDenied):
            await james.wait_for(support, Status.OPEN)

        # acting on another department's ticket is refused before anything is written
        with pytest.raises(AccessDenied):
            await james.reply(support, agent="james", body="Not my ticket.")
        assert (await operator.get(support)).first_response_at is None
        assert (await james.reply(billing, agent="james", body="Refund issued.")).first_response_at is not None

        # the CLI, as a user runs it: --as or TICKETFLOW_AS scopes list and show; nothing given is the operator
        env = {"TICKETFLOW_TEMPORAL_ADDRESS": dev_server.address, "TICKETFLOW_TASK_QUEUE": task_queue}
        listed = await cli(env, "list", "--as", "james", "--limit", "1000", "--json")
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert billing in {r["ticket_id"] for r in rows} and {r["department"] for r in rows} == {"billing"}
        everyone = await cli(env, "list", "--limit", "1000", "--json")
        assert everyone.exit_code == 0 and {billing, support} <= {r["ticket_id"] for r in json.loads(everyone.stdout)}

        shown = await cli(env, "show", billing, "--as", "james@northwind.example", "--json")
        assert shown.exit_code == 0 and json.loads(shown.stdout)["ticket_id"] == billing
        refused = await cli(env, "show", support, "--as", "james")
        assert refused.exit_code == 1 and refused.stdout == ""
        assert f"access denied: 'james' may not see ticket {support}" in refused.stderr
        assert "Traceback" not in refused.output
        by_env = await cli({**env, "TICKETFLOW_AS": "james"}, "show", support)
        assert by_env.exit_code == 1 and "access denied" in by_env.stderr
        overridden = await cli({**env, "TICKETFLOW_AS": "james"}, "show", support, "--as", "anna", "--json")
        assert overridden.exit_code == 0 and json.loads(overridden.stdout)["ticket_id"] == support
        as_operator = await cli(env, "show", support, "--json")
        assert as_operator.exit_code == 0 and json.loads(as_operator.stdout)["department"] == "technical_support"
        outside = await cli(env, "list", "--as", "james", "--department", "technical_support")
        assert outside.exit_code == 1 and "access denied: 'james' may not see department" in outside.stderr
        unknown = await cli(env, "list", "--as", "mallory")
        assert unknown.exit_code == 2 and "unknown agent or lead 'mallory'" in unknown.stderr
        assert "known agent ids:" in unknown.stderr and "james" in unknown.stderr

        # the department report from PostgreSQL, where the worker stored both tickets
        today = datetime.now(UTC).date()
        span = ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1)), "--tz", "UTC"]
        denied = await cli(env, "report", "--as", "james", "-d", "technical_support", *span)
        assert denied.exit_code == 1 and "access denied: 'james' may not see department 'technical_support'" in (
            denied.stderr
        )
        theirs = report_rows(await cli(env, "report", "--as", "james", "--csv", *span))
        assert {r["department"] for r in theirs} == {"billing"} and sum(int(r["created"]) for r in theirs) >= 1
        chosen = report_rows(await cli(env, "report", "--as", "james", "-d", "billing", "--csv", *span))
        assert {r["department"] for r in chosen} == {"billing"}
        every = report_rows(await cli(env, "report", "--csv", *span))
        assert {"billing", "technical_support"} <= {r["department"] for r in every}


async def cli(env: dict[str, str], *args: str) -> Result:
    """The CLI in a thread of its own (it runs its own event loop, as in a shell)."""
    return await asyncio.to_thread(lambda: CliRunner().invoke(app, list(args), env=env))


def report_rows(result: Result) -> list[dict[str, str]]:
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


@pytest.fixture
def cli_settings(migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default policy, the test database, and no stray .env or TICKETFLOW_AS from the caller's shell."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", migrated)
    for name in ("TICKETFLOW_AS", "TICKETFLOW_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return migrated


# --- a ticket run to its close (time-skipping server) -----------------------------------------------------


async def test_final_state_is_refused_outside_the_viewers_departments(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str
) -> None:
    operator = TicketClient(ts_client, task_queue)
    cfg = default_config()
    async with make_worker(ts_client, task_queue):
        tid = (await operator.open(ticket(**SUPPORT_TICKET))).ticket_id
        assert (await operator.wait_for(tid, Status.OPEN)).department == "technical_support"
        await operator.resolve(tid, agent="anna")
        await ts_env.sleep(timedelta(days=8))  # past the survey window: the workflow completes
        with pytest.raises(AccessDenied, match=f"'james' may not see ticket {tid}"):
            await operator.as_viewer(resolve_viewer(cfg, "james")).final_state(tid)
        assert (await operator.as_viewer(resolve_viewer(cfg, "anna")).final_state(tid)).status == Status.CLOSED
        assert (await operator.final_state(tid)).status == Status.CLOSED
