"""`ticketflow import`: migrate open tickets from another help desk's CSV export.

Each row's ticket id becomes the external message id `import:<source>:<id>`, so the workflow id is
deterministic: re-running an interrupted import skips what is already in, and nothing is opened twice.
Imported tickets are not acknowledged again. Rows that cannot become tickets are reported with the
row number and the precise reason; nothing else is silently dropped.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from starter.client import TicketClient, TicketValidationError


class ColumnMapping(BaseModel):
    """Where each field lives in the export; the defaults read the common 'customer support ticket' export."""

    source: str = "helpdesk"
    id: str = "Ticket ID"
    name: str = "Customer Name"
    email: str = "Customer Email"
    subject: str = "Ticket Subject"
    body: str = "Ticket Description"
    channel: str = "Ticket Channel"
    status: str = "Ticket Status"
    tag_columns: list[str] = Field(default_factory=lambda: ["Ticket Type", "Ticket Priority", "Product Purchased"])
    channels: dict[str, str] = Field(
        default_factory=lambda: {
            "email": "email",
            "phone": "phone",
            "social media": "social",
            "chat": "chat",
            "web": "web_form",
            "api": "api",
        }
    )
    closed_statuses: list[str] = Field(default_factory=lambda: ["closed", "resolved", "solved"])
    placeholders: dict[str, str] = Field(default_factory=lambda: {"{product_purchased}": "Product Purchased"})


class ImportReport(BaseModel):
    rows: int = 0
    opened: int = 0
    already_imported: int = 0
    skipped_closed: int = 0
    rejected: list[tuple[int, str]] = Field(default_factory=list)


def ticket_from_row(row: dict[str, str], mapping: ColumnMapping) -> dict[str, Any]:
    body = row.get(mapping.body, "")
    for placeholder, column in mapping.placeholders.items():
        body = body.replace(placeholder, row.get(column) or "product")
    channel_raw = (row.get(mapping.channel) or "").strip().lower()
    tags = [f"{c.lower().replace(' ', '-')}:{row[c].strip()}"[:64] for c in mapping.tag_columns if row.get(c)]
    return {
        "subject": (row.get(mapping.subject) or "").strip(),
        "body": body.strip(),
        "customer": {"name": (row.get(mapping.name) or "").strip(), "email": (row.get(mapping.email) or "").strip()},
        "channel": mapping.channels.get(channel_raw, channel_raw),
        "external_message_id": f"import:{mapping.source}:{(row.get(mapping.id) or '').strip()}",
        "tags": [f"imported:{mapping.source}", *tags],
    }


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        yield from enumerate(csv.DictReader(fh), start=2)  # row 1 is the header


async def import_csv(
    client: TicketClient, path: Path, mapping: ColumnMapping, *, concurrency: int = 8, console: Console | None = None
) -> ImportReport:
    report = ImportReport()
    counts: Counter[str] = Counter()
    rows = list(read_rows(path))
    report.rows = len(rows)
    gate = asyncio.Semaphore(concurrency)
    with Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
    ) as progress:
        task = progress.add_task("import", total=len(rows))

        async def one(n: int, row: dict[str, str]) -> None:
            async with gate:
                try:
                    if not (row.get(mapping.id) or "").strip():
                        report.rejected.append((n, f"{mapping.id}: missing, so the row cannot be imported safely"))
                    elif (row.get(mapping.status) or "").strip().lower() in mapping.closed_statuses:
                        counts["closed"] += 1
                    else:
                        opened = await client.open(ticket_from_row(row, mapping), imported=True)
                        counts["duplicate" if opened.duplicate else "opened"] += 1
                except TicketValidationError as err:
                    report.rejected.append((n, str(err).removeprefix("invalid ticket: ")))
                finally:
                    progress.advance(task)

        await asyncio.gather(*(one(n, row) for n, row in rows))
    report.opened, report.already_imported, report.skipped_closed = (
        counts["opened"],
        counts["duplicate"],
        counts["closed"],
    )
    report.rejected.sort()
    return report
