"""The HTTP intake (ASGI) with valid and invalid bodies, against the real dev server and Postgres."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from starter.client import TicketClient
from starter.http_intake import MAX_REQUEST_BYTES, create_app
from tests.conftest import WorkerFactory, terminate_leftovers
from tests.factories import ticket
from ticketflow.models import Status

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


async def test_http_intake_accepts_valid_tickets_and_explains_bad_ones(
    dev_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool
) -> None:
    tickets = TicketClient(dev_client, task_queue)
    app = create_app(tickets)
    payload = ticket(channel="chat", subject="Wrong item delivered", body="I got the wrong item, I need an exchange.")
    opened: list[str] = []
    async with (
        make_worker(dev_client, task_queue),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http,
    ):
        try:
            created = await http.post("/tickets", json=payload)
            assert created.status_code == 201, created.text
            tid = created.json()["ticket_id"]
            opened.append(f"ticket-{tid}")
            again = await http.post("/tickets", json=payload)
            assert again.status_code == 200 and again.json() == {**created.json(), "duplicate": True}
            await tickets.wait_for(tid, Status.OPEN)
            status = (await http.get(f"/tickets/{tid}")).json()
            assert status["department"] == "returns" and status["status"] == "open" and status["next_due_at"]

            form = ticket(subject="Pricing", body="A quote for 40 licences, please.")
            del form["channel"]
            web = await http.post("/tickets", json=form)  # a web form need not say its channel
            assert web.status_code == 201
            opened.append(web.json()["workflow_id"])

            reply = await http.post(
                f"/tickets/{tid}/replies", json={"body": "Order 1234.", "external_message_id": "m1"}
            )
            assert reply.status_code == 200 and reply.json()["status"] == "open"
            duplicate = await http.post(
                f"/tickets/{tid}/replies", json={"body": "Order 1234.", "external_message_id": "m1"}
            )
            assert duplicate.status_code == 409 and "already on this ticket" in duplicate.json()["error"]

            bad = await http.post("/tickets", json=ticket(customer={"email": "nope"}, channel="fax"))
            assert bad.status_code == 422
            locs = {tuple(e["loc"]) for e in bad.json()["errors"]}
            assert locs == {("customer", "email"), ("channel",)}
            assert (
                await http.post("/tickets", content=b"{not json", headers={"content-type": "application/json"})
            ).status_code == 400
            assert (
                await http.post("/tickets", content=b"subject=x", headers={"content-type": "text/plain"})
            ).status_code == 415
            huge = json.dumps({**payload, "body": "x" * (MAX_REQUEST_BYTES + 1)})
            too_big = await http.post("/tickets", content=huge, headers={"content-type": "application/json"})
            assert too_big.status_code == 413
            assert (await http.get("/tickets/aaaaaaaaaaaa")).status_code == 404
            assert (await http.post("/tickets/aaaaaaaaaaaa/replies", json={"body": 5})).status_code == 422
        finally:
            await terminate_leftovers(dev_client, opened)
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT channel FROM tickets WHERE id = %s", (tid,))).fetchone()
    assert row == {"channel": "chat"}
