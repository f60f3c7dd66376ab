"""Determinism: histories of every lifecycle path replay against the current workflow code.

Histories recorded by earlier versions live in tests/histories/ and are replayed on every run, so a
change that would break running tickets fails here first. Record new ones with
`TICKETFLOW_RECORD_HISTORIES=1 make test PYTEST_ARGS=tests/test_replay.py`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from starter.client import TicketClient
from tests.conftest import WorkerFactory, wall_clock
from tests.factories import ticket
from ticketflow.config import Config, WorkflowSandbox, default_config
from ticketflow.ids import workflow_id
from ticketflow.models import Priority, Status, TicketState, TicketWorkflowInput
from ticketflow.temporal import DATA_CONVERTER
from worker import WORKFLOWS, sandbox_runner
from workflows.ticket import TicketWorkflow

HISTORIES = Path(__file__).parent / "histories"
# Recorded histories are named for the workflow version that produced them; all of them replay.
RECORDING_AS = "v10-open-as-local-step"


@pytest.fixture(scope="module")
def config() -> Config:
    """These tests are about lifecycle mechanics in calendar hours; business hours: test_sla.py."""
    return wall_clock(default_config())


def replayer(sandbox: WorkflowSandbox = "strict") -> Replayer:
    return Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner(sandbox))


async def drive_every_path(tickets: TicketClient, env: WorkflowEnvironment) -> dict[str, str]:
    """Tickets that between them take every branch of the lifecycle."""
    paths: dict[str, str] = {}

    opened = await tickets.open(ticket(subject="URGENT: production down", body="Everything is down, emergency."))
    tid = opened.ticket_id
    await tickets.wait_for(tid, Status.OPEN)
    paths["sla-breach-pend-escalate-reopen-rate-close"] = tid
    await env.sleep(timedelta(minutes=16))  # first-response reminder
    await tickets.pend(tid, "anna", "need logs")
    await tickets.customer_reply(tid, "logs attached")
    await env.sleep(timedelta(minutes=20))  # breach
    await tickets.reply(tid, "anna", "Looking into it.")
    await tickets.escalate(tid, "anna", "needs a specialist")
    await tickets.resolve(tid, "dmitri")
    await tickets.customer_reply(tid, "Still broken.")  # reopens
    await tickets.reply(tid, "dmitri", "Now fixed for real.", pend=True)
    await tickets.resolve(tid, "dmitri")
    await env.sleep(timedelta(minutes=61))  # survey
    await tickets.rate(tid, "good")
    await env.sleep(timedelta(days=8))  # window ends: closed

    opened = await tickets.open(ticket(subject="Where is my account name setting?", body="Hello, where is it?"))
    await tickets.wait_for(opened.ticket_id, Status.OPEN)
    paths["timer-escalation-to-tier-4"] = opened.ticket_id

    opened = await tickets.open(ticket(subject="Export shows an error", body="The CSV export shows an error."))
    tid = opened.ticket_id
    await tickets.wait_for(tid, Status.OPEN)
    paths["priority-transfer-deescalate-next-reply"] = tid
    await tickets.change_priority(tid, "anna", Priority.HIGH, "customer blocked")
    await tickets.note(tid, "anna", "Customer is on the old exporter.")
    current = (await tickets.get(tid)).assignee
    other = next(a for a in ("anna", "lucas", "sofia") if a != current)
    await tickets.assign(tid, "anna", other, "knows the exporter")
    await tickets.reply(tid, "anna", "Which version do you run?")
    await tickets.customer_reply(tid, "Version 2.")  # starts the next-reply clock
    await tickets.escalate(tid, "anna", "needs a specialist")
    await tickets.deescalate(tid, "dmitri", "tier 1 can finish it")
    await tickets.transfer(tid, "anna", "billing", "it is about an invoice export")
    await tickets.refresh_policy(tid, "ops", "policy file edited")
    await env.sleep(timedelta(days=4))
    await tickets.resolve(tid, "james")

    opened = await tickets.open(ticket(subject="Where do I find my invoices?", body="Hello, where are they?"))
    tid = opened.ticket_id
    await tickets.wait_for(tid, Status.OPEN)
    paths["pending-reminder-survey-reminder-survey-answer"] = tid
    await tickets.reply(tid, "anna", "Which account do you mean?", pend=True)
    await env.sleep(timedelta(days=3))  # the pending reminder
    await tickets.customer_reply(tid, "The main one.")
    await tickets.reply(tid, "anna", "Under Billing > Invoices.")
    await tickets.resolve(tid, "anna")
    await env.sleep(timedelta(days=3, hours=2))  # the survey, then its reminder
    await tickets.rate(tid, 2, reason="slow_response", resolution=1, nonce="form-1")  # as the survey pages do
    await tickets.rate(tid, 4, resolution=1, nonce="form-2")  # changed
    await tickets.reopen(tid, "anna", "customer wrote again")  # the reopen notice
    await tickets.resolve(tid, "anna")
    return paths


async def test_histories_of_this_run_replay(
    ts_env: WorkflowEnvironment, ts_client: Client, make_worker: WorkerFactory, task_queue: str
) -> None:
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue):
        paths = await drive_every_path(tickets, ts_env)
        assert (await tickets.final_state(paths["sla-breach-pend-escalate-reopen-rate-close"])).status == "closed"
        assert (await tickets.get(paths["timer-escalation-to-tier-4"])).tier == 4
        histories = {
            name: await ts_client.get_workflow_handle(workflow_id(tid)).fetch_history() for name, tid in paths.items()
        }
    for name, history in histories.items():
        await replayer().replay_workflow(history)
        if os.environ.get("TICKETFLOW_RECORD_HISTORIES") == "1":
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{RECORDING_AS}--{name}.json").write_text(history.to_json(), "utf-8")


RECORDED = {p.stem: p.read_text("utf-8") for p in sorted(HISTORIES.glob("*.json"))}


@pytest.mark.parametrize("sandbox", ["strict", "shared", "off"])
@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_recorded_histories_replay(name: str, sandbox: WorkflowSandbox) -> None:
    """Every worker setting (TICKETFLOW_WORKFLOW_SANDBOX) takes the same decisions."""
    history = WorkflowHistory.from_json(name, RECORDED[name])
    result = await replayer(sandbox).replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_recorded_histories_exist() -> None:
    assert len(RECORDED) >= 4, "tests/histories/ lost its recorded histories"


@workflow.defn(name="TicketWorkflow", sandboxed=False)
class ReorderedTicketWorkflow(TicketWorkflow):
    """The real workflow with one new command (a timer) ahead of everything: what a careless edit looks like."""

    @workflow.run
    async def run(self, input: TicketWorkflowInput) -> TicketState:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(input)


async def replay_all(workflow_class: type) -> list[str]:
    """The names of the recorded histories that fail to replay on `workflow_class`."""
    replayer = Replayer(
        workflows=[workflow_class], data_converter=DATA_CONVERTER, workflow_runner=UnsandboxedWorkflowRunner()
    )
    failed = []
    for name, text in RECORDED.items():
        result = await replayer.replay_workflow(WorkflowHistory.from_json(name, text), raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failed.append(name)
    return failed


async def test_a_non_deterministic_change_fails_the_replay_test() -> None:
    """The test of the test: the recorded histories catch a change that would break running tickets."""
    assert await replay_all(TicketWorkflow) == []
    assert sorted(await replay_all(ReorderedTicketWorkflow)) == sorted(RECORDED)
