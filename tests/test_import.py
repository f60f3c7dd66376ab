"""Bulk import of a few hundred rows of a foreign help desk's export, interrupted and resumed, with
exact counts: nothing opened twice, every rejected row named with its reason, no customer re-acknowledged."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from starter.client import TicketClient
from starter.importer import ColumnMapping, import_csv, ticket_from_row
from starter.smtp_sink import SmtpSink
from tests.conftest import StartRecorder, WorkerFactory, terminate_leftovers

pytestmark = pytest.mark.e2e
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "helpdesk-export-sample.csv"
HEADER = [
    "Ticket ID",
    "Customer Name",
    "Customer Email",
    "Product Purchased",
    "Ticket Type",
    "Ticket Subject",
    "Ticket Description",
    "Ticket Status",
    "Ticket Priority",
    "Ticket Channel",
]


def export(path: Path, source_ids: range) -> tuple[int, int, int]:
    """Rows in the export's shape; returns (importable, closed, bad) counts."""
    counts = [0, 0, 0]
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for i in source_ids:
            status = "Closed" if i % 5 == 0 else ("Pending Customer Response" if i % 2 else "Open")
            email = f"customer{i}@example.com" if i % 37 else "not-an-email"
            channel = ["Email", "Phone", "Social media", "Chat"][i % 4]
            out.writerow(
                [
                    i,
                    f"Customer {i}",
                    email,
                    "Dell XPS",
                    "Technical issue",
                    "Product setup",
                    f"I'm having an issue with the {{product_purchased}} (case {i}). Please assist.",
                    status,
                    "High",
                    channel,
                ]
            )
            counts[1 if status == "Closed" else (2 if email == "not-an-email" else 0)] += 1
    return counts[0], counts[1], counts[2]


def test_row_mapping_fills_the_exports_placeholders() -> None:
    row = {
        "Ticket ID": "7",
        "Customer Name": "Ada",
        "Customer Email": "ada@example.com",
        "Product Purchased": "GoPro",
        "Ticket Subject": "Setup",
        "Ticket Description": "My {product_purchased} fails",
        "Ticket Channel": "Social media",
        "Ticket Type": "Technical issue",
        "Ticket Priority": "Critical",
        "Ticket Status": "Open",
    }
    t = ticket_from_row(row, ColumnMapping(source="zd"))
    assert t["body"] == "My GoPro fails" and t["channel"] == "social"
    assert t["external_message_id"] == "import:zd:7"
    assert "ticket-priority:Critical" in t["tags"] and "imported:zd" in t["tags"]


async def test_import_interrupted_and_resumed_opens_each_ticket_once(
    dev_client: Client, make_worker: WorkerFactory, task_queue: str, pool: Pool, smtp: SmtpSink, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    importable, closed, bad = export(path, range(1, 301))
    source = f"t{task_queue[-6:]}"
    mapping = ColumnMapping(source=source)
    recorder = StartRecorder()
    config = dev_client.config()
    config["interceptors"] = [recorder]
    tickets = TicketClient(Client(**config), task_queue)
    mails_before = len(smtp.messages)
    async with make_worker(dev_client, task_queue):
        try:
            first = asyncio.create_task(import_csv(tickets, path, mapping, concurrency=4))
            while len(recorder.ids) < 60:  # noqa: ASYNC110 - interrupt part-way, as a Ctrl-C or a crash would
                await asyncio.sleep(0.05)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            started = len(set(recorder.ids))
            assert 0 < started < importable

            report = await import_csv(tickets, path, mapping, concurrency=8)
        finally:
            await terminate_leftovers(dev_client, recorder.ids)
    assert report.rows == 300 and report.skipped_closed == closed
    assert report.opened + report.already_imported == importable
    assert report.already_imported >= started - 4  # attempts in flight at the interruption may not have landed
    assert len(report.rejected) == bad and all("customer.email" in reason for _, reason in report.rejected)
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT count(*) AS n, count(DISTINCT external_message_id) AS distinct_ids FROM tickets"
                " WHERE external_message_id LIKE %s",
                (f"import:{source}:%",),
            )
        ).fetchone()
    assert rows is not None and rows["n"] == rows["distinct_ids"] <= importable
    imported_acks = [
        m
        for m in smtp.messages[mails_before:]
        if "We received your request" in m.subject and m.rcpt_tos[0].startswith("customer")
    ]
    assert imported_acks == []  # migrated customers are not acknowledged again


def test_the_shared_export_maps_cleanly() -> None:
    mapping = ColumnMapping()
    with SHARED.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    mapped = [ticket_from_row(r, mapping) for r in rows[:500]]
    assert all("{product_purchased}" not in t["body"] for t in mapped)
    assert {t["channel"] for t in mapped} <= {"email", "phone", "social", "chat"}
