"""The quarantine: payloads that failed after acceptance, kept for an operator.

A ticket started straight through Temporal (another SDK, the CLI, plain JSON) skips the client's
checks; when the intake activity then refuses it, the workflow fails with the field-level message and
the payload would live on only in that failed run's history, until retention deletes it. So the
intake keeps it here first. An operator lists, corrects and retries it (`ticketflow quarantine`),
or discards it with a note: nothing accepted disappears unseen.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import BaseModel

Source = Literal["workflow"]
QuarantineStatus = Literal["held", "retried", "discarded"]


class Quarantined(BaseModel):
    id: int
    source: Source
    ref: str
    payload: str
    error: str
    received_at: datetime
    status: QuarantineStatus
    attempts: int
    last_error: str | None
    ticket_id: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    note: str | None

    def payload_json(self) -> Any:
        return json.loads(self.payload)


Conn = AsyncConnection[dict[str, Any]]


async def hold(conn: Conn, source: Source, ref: str, payload: Any, error: str) -> int:
    """Keep a payload once per failed run (a retried activity finds its row already there)."""
    text = json.dumps(payload, ensure_ascii=False, default=str)
    row = await (
        await conn.execute(
            "INSERT INTO quarantine (source, ref, payload, error) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (source, ref) DO UPDATE SET error = EXCLUDED.error RETURNING id",
            (source, ref, text, error),
        )
    ).fetchone()
    assert row is not None
    return int(row["id"])


async def listing(conn: Conn, status: QuarantineStatus | None = "held", limit: int = 100) -> list[Quarantined]:
    rows = await (
        await conn.execute(
            "SELECT * FROM quarantine WHERE %(status)s::text IS NULL OR status = %(status)s"
            " ORDER BY received_at, id LIMIT %(limit)s",
            {"status": status, "limit": limit},
        )
    ).fetchall()
    return [Quarantined.model_validate(r) for r in rows]


async def get(conn: Conn, entry_id: int, *, lock: bool = False) -> Quarantined | None:
    sql = "SELECT * FROM quarantine WHERE id = %s" + (" FOR UPDATE" if lock else "")
    row = await (await conn.execute(sql, (entry_id,))).fetchone()
    return Quarantined.model_validate(row) if row else None


async def retried(conn: Conn, entry_id: int, ticket_id: str, by: str) -> None:
    """A retry opened `ticket_id`; the payload stays as it was received, the error on record."""
    await conn.execute(
        "UPDATE quarantine SET status = 'retried', attempts = attempts + 1, ticket_id = %s, resolved_at = now(),"
        " resolved_by = %s WHERE id = %s",
        (ticket_id, by, entry_id),
    )


async def retry_failed(conn: Conn, entry_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE quarantine SET attempts = attempts + 1, last_error = %s WHERE id = %s", (error, entry_id)
    )


async def discarded(conn: Conn, entry_id: int, by: str, note: str) -> None:
    await conn.execute(
        "UPDATE quarantine SET status = 'discarded', resolved_at = now(), resolved_by = %s, note = %s WHERE id = %s",
        (by, note, entry_id),
    )


async def held_count(conn: Conn) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM quarantine WHERE status = 'held'")).fetchone()
    return int(row["n"]) if row else 0
