"""Quarantine: a ticket started straight through Temporal with a payload the intake refuses is kept in
PostgreSQL for an operator, who can correct and retry it (once) or discard it, with the real dev server,
PostgreSQL and the `ticketflow quarantine` CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner, Result

from activities.backlog import BacklogCollector
from starter.cli import app
from starter.client import TicketClient
from starter.devstack import TemporalDevServer
from tests.conftest import WorkerFactory
from tests.factories import ticket
from ticketflow import contract
from ticketflow.config import default_config
from ticketflow.models import Status, TicketWorkflowInput

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
pytestmark = pytest.mark.e2e


async def cli(server: TemporalDevServer, db: str, task_queue: str, *args: str) -> Result:
    """The CLI in a thread of its own: it runs its own event loop, as it does in a shell."""
    env = {"DATABASE_URL": db, "TICKETFLOW_TEMPORAL_ADDRESS": server.address, "TICKETFLOW_TASK_QUEUE": task_queue}
    return await asyncio.to_thread(lambda: CliRunner().invoke(app, ["quarantine", *args], env=env))


async def start_raw(client: Client, task_queue: str, payload: Any) -> str:
    """What another SDK or `temporal workflow start` does: plain JSON, none of the SDK's checks."""
    wid = f"ticket-{uuid.uuid4().hex[:12]}"
    handle = await client.start_workflow(
        contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=payload), id=wid, task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TICKET
    return cause.message


async def rows(pool: Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute("SELECT * FROM quarantine ORDER BY id")).fetchall()


async def test_a_refused_payload_is_kept_corrected_retried_once_or_discarded(
    dev_server: TemporalDevServer,
    dev_client: Client,
    make_worker: WorkerFactory,
    task_queue: str,
    pool: Pool,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    before = {r["id"] for r in await rows(pool)}
    gauge = BacklogCollector(postgres_url, default_config(), ttl_seconds=0)
    held_before = (await asyncio.to_thread(gauge.snapshot)).quarantined
    bad = ticket(subject="Printer\x00 on fire", customer={"email": "not-an-address"})  # a NUL, a bad address
    spam = {"subject": "", "body": 42}
    async with make_worker(dev_client, task_queue):
        message = await start_raw(dev_client, task_queue, bad)
        await start_raw(dev_client, task_queue, spam)
        held = [r for r in await rows(pool) if r["id"] not in before]
        assert [r["status"] for r in held] == ["held", "held"]
        assert (await asyncio.to_thread(gauge.snapshot)).quarantined == held_before + 2  # on the dashboard
        first, second = held
        # the failure names the fields and says where the payload is kept
        assert "customer.email" in message and "subject" in message
        assert f"kept in quarantine as #{first['id']}" in message
        assert json.loads(first["payload"]) == bad  # byte for byte, the NUL included
        assert first["ref"].startswith("ticket-") and first["source"] == "workflow"

        listed = await cli(dev_server, postgres_url, task_queue, "list", "--json")
        assert listed.exit_code == 0, listed.output
        assert {e["id"] for e in json.loads(listed.output)} >= {first["id"], second["id"]}
        shown = await cli(dev_server, postgres_url, task_queue, "show", str(first["id"]), "--json")
        assert json.loads(json.loads(shown.output)["payload"]) == bad

        # A retry of the payload as it was fails the same way and stays held, with the attempt counted.
        again = await cli(dev_server, postgres_url, task_queue, "retry", str(first["id"]), "--by", "ops")
        assert again.exit_code == 2 and "customer.email" in again.output and "still held" in again.output
        (row,) = [r for r in await rows(pool) if r["id"] == first["id"]]
        assert (row["status"], row["attempts"]) == ("held", 1) and "customer.email" in row["last_error"]

        corrected = tmp_path / "fixed.json"
        corrected.write_text(json.dumps(ticket(subject="Printer on fire")), "utf-8")
        fixed = await cli(
            dev_server, postgres_url, task_queue, "retry", str(first["id"]), "--payload", str(corrected), "--by", "ops"
        )
        assert fixed.exit_code == 0, fixed.output
        ticket_id = fixed.output.strip().rsplit(" ", 1)[-1]
        tickets = TicketClient(dev_client, task_queue)
        state = await tickets.wait_for(ticket_id, Status.OPEN, within=30)
        assert state.department is not None
        (row,) = [r for r in await rows(pool) if r["id"] == first["id"]]
        assert (row["status"], row["ticket_id"], row["resolved_by"], row["attempts"]) == (
            "retried",
            ticket_id,
            "ops",
            2,
        )
        assert json.loads(row["payload"]) == bad  # what arrived stays on record

        twice = await cli(dev_server, postgres_url, task_queue, "retry", str(first["id"]))
        assert twice.exit_code == 1 and f"already retried as ticket {ticket_id}" in twice.output

        empty_note = await cli(dev_server, postgres_url, task_queue, "discard", str(second["id"]), "--note", " ")
        assert empty_note.exit_code == 2
        gone = await cli(
            dev_server, postgres_url, task_queue, "discard", str(second["id"]), "--note", "test junk", "--by", "ops"
        )
        assert gone.exit_code == 0, gone.output
        late = await cli(dev_server, postgres_url, task_queue, "retry", str(second["id"]))
        assert late.exit_code == 1 and "discarded by ops: test junk" in late.output
        missing = await cli(dev_server, postgres_url, task_queue, "show", "999999")
        assert missing.exit_code == 1 and "no quarantine entry #999999" in missing.output

    assert (await asyncio.to_thread(gauge.snapshot)).quarantined == held_before
    held_now = await cli(dev_server, postgres_url, task_queue, "list", "--json")
    assert not {e["id"] for e in json.loads(held_now.output)} & {first["id"], second["id"]}
    async with pool.connection() as conn:
        opened = await (
            await conn.execute("SELECT external_message_id FROM tickets WHERE id = %s", (ticket_id,))
        ).fetchone()
    assert opened == {"external_message_id": f"<quarantine.{first['id']}@ticketflow>"}


async def test_the_cli_says_what_is_missing(tmp_path: Path) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["quarantine", "list"], env={"DATABASE_URL": ""})
    assert result.exit_code == 1 and "DATABASE_URL is not set" in result.output
