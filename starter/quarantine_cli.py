"""`ticketflow quarantine`: look at, correct, retry or discard payloads that failed after acceptance.

A retry opens the ticket through the SDK, so it is checked field by field before anything starts; a
retry that fails stays in quarantine with its error and attempt count. The retried ticket's external
id is derived from the entry, so running a retry twice (say after a crash) opens one ticket only.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from psycopg import AsyncConnection, Error, OperationalError
from psycopg.errors import UndefinedTable
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table

from activities import quarantine
from activities.quarantine import Quarantined, QuarantineStatus
from starter.client import TicketClient, TicketValidationError
from ticketflow.config import Settings

quarantine_app = typer.Typer(
    help="Payloads that failed after they were accepted, kept for an operator: list, show, retry, discard.",
    no_args_is_help=True,
)
T = TypeVar("T")
Conn = AsyncConnection[dict[str, Any]]


class Show(StrEnum):
    held = "held"
    retried = "retried"
    discarded = "discarded"
    all = "all"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _with_db(work: Callable[[Conn], Awaitable[T]]) -> T:
    url = Settings().database_url
    if not url:
        _fail("DATABASE_URL is not set: point it at ticketflow's PostgreSQL database")

    async def go() -> T:
        async with await AsyncConnection.connect(url, connect_timeout=10, row_factory=dict_row) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except UndefinedTable:
        _fail("the quarantine table is missing: run a worker once so it applies the migrations")
    except OperationalError as err:
        _fail(f"cannot reach PostgreSQL at DATABASE_URL: {str(err).strip()}")
    except Error as err:
        _fail(f"the quarantine query failed: {str(err).strip()}")


async def _entry(conn: Conn, entry_id: int, *, lock: bool = False) -> Quarantined:
    found = await quarantine.get(conn, entry_id, lock=lock)
    if found is None:
        _fail(f"no quarantine entry #{entry_id} (`ticketflow quarantine list --status all` shows every one)")
    return found


def _settled(entry: Quarantined) -> str | None:
    if entry.status == "retried":
        return f"entry #{entry.id} was already retried as ticket {entry.ticket_id} by {entry.resolved_by}"
    if entry.status == "discarded":
        return f"entry #{entry.id} was discarded by {entry.resolved_by}: {entry.note}"
    return None


@quarantine_app.command("list")
def list_entries(
    status: Annotated[Show, typer.Option(help="Which entries to show.")] = Show.held,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Entries oldest first; held ones are waiting for an operator."""

    async def work(conn: Conn) -> list[Quarantined]:
        wanted: QuarantineStatus | None = None if status is Show.all else status.value  # type: ignore[assignment]
        return await quarantine.listing(conn, wanted, limit)

    entries = _with_db(work)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], ensure_ascii=False, indent=2))
        return
    console = Console(markup=False, highlight=False, emoji=False)
    table = Table(title=f"{len(entries)} {status.value} quarantine entries")
    for col in ("id", "received (UTC)", "source", "status", "attempts", "ticket", "error"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.id),
            f"{e.received_at:%Y-%m-%d %H:%M}",
            e.source,
            e.status,
            str(e.attempts),
            e.ticket_id or "-",
            (e.last_error or e.error)[:200],
        )
    console.print(table)


@quarantine_app.command("show")
def show(entry_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One entry with its payload, ready to correct and pass to `retry --payload`."""

    async def work(conn: Conn) -> Quarantined:
        return await _entry(conn, entry_id)

    entry = _with_db(work)
    if as_json:
        typer.echo(entry.model_dump_json(indent=2))
        return
    for label, value in (
        ("entry", f"#{entry.id} ({entry.status}, {entry.attempts} retries)"),
        ("received", entry.received_at.isoformat()),
        ("from", f"{entry.source} {entry.ref}"),
        ("error", entry.error),
        ("last retry error", entry.last_error),
        ("ticket", entry.ticket_id),
        ("resolved", f"{entry.resolved_at:%Y-%m-%d %H:%M} by {entry.resolved_by}" if entry.resolved_at else None),
        ("note", entry.note),
    ):
        if value:
            typer.echo(f"{label + ':':18}{value}")
    typer.echo("payload:")
    typer.echo(json.dumps(entry.payload_json(), ensure_ascii=False, indent=2))


def _read_payload(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        _fail(f"cannot read {path}: {err}", 2)
    except json.JSONDecodeError as err:
        _fail(f"{path} is not JSON: {err}", 2)


@quarantine_app.command("retry")
def retry(
    entry_id: int,
    payload: Annotated[
        Path | None, typer.Option(dir_okay=False, help="A corrected payload (JSON), e.g. from `show --json`.")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who retries it (default: the login name).")] = None,
) -> None:
    """Open the ticket again from the kept (or corrected) payload."""
    corrected = _read_payload(payload) if payload is not None else None
    actor = by or getpass.getuser()
    settings = Settings()

    async def work(conn: Conn) -> str:
        async with conn.transaction():  # the row lock keeps two operators from retrying one entry at once
            entry = await _entry(conn, entry_id, lock=True)
            if (settled := _settled(entry)) is not None:
                _fail(settled)
            ticket = corrected if corrected is not None else entry.payload_json()
            if not isinstance(ticket, dict):
                _fail(f"the payload of entry #{entry_id} is not a JSON object; pass a corrected one with --payload", 2)
            # One ticket per entry however often this runs: the external id is the entry's.
            ticket = {**ticket, "external_message_id": f"<quarantine.{entry.id}@ticketflow>"}
            try:
                client = await TicketClient.connect(
                    settings.temporal_address, settings.temporal_namespace, settings.task_queue
                )
            except ConnectionError as err:
                _fail(str(err))
            try:
                opened = await client.open(ticket)
            except TicketValidationError as err:
                message = str(err)
            else:
                await quarantine.retried(conn, entry.id, opened.ticket_id, actor)
                return opened.ticket_id
        async with conn.transaction():
            await quarantine.retry_failed(conn, entry_id, message)
        hint = f"still held; correct it with --payload FILE, see `ticketflow quarantine show {entry_id}`"
        _fail(f"{message}\n({hint})", 2)

    ticket_id = _with_db(work)
    typer.echo(f"entry #{entry_id} retried: opened ticket {ticket_id}")


@quarantine_app.command("discard")
def discard(
    entry_id: int,
    note: Annotated[str, typer.Option(help="Why it is discarded (kept on record).")],
    by: Annotated[str | None, typer.Option(help="Who discards it (default: the login name).")] = None,
) -> None:
    """Settle an entry without a ticket (spam, a test, handled elsewhere); the payload stays on record."""
    if not note.strip():
        _fail("--note must say why the entry is discarded", 2)

    async def work(conn: Conn) -> None:
        async with conn.transaction():
            entry = await _entry(conn, entry_id, lock=True)
            if (settled := _settled(entry)) is not None:
                _fail(settled)
            await quarantine.discarded(conn, entry.id, by or getpass.getuser(), note.strip())

    _with_db(work)
    typer.echo(f"entry #{entry_id} discarded")
