"""Postgres access: the connection pool and versioned, idempotent migrations."""

from __future__ import annotations

import logging
import re
from importlib import resources

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by every ticketflow process: serialises concurrent migrators.
_MIGRATION_LOCK = 0x7469636B


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("activities").joinpath("migrations").iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


async def migrate(conninfo: str, upto: int | None = None) -> list[str]:
    """Apply pending migrations (those up to version `upto`, when given: a benchmark or a test of a data
    migration needs the schema as it was), each in its own transaction; safe to run from many workers."""
    applied: list[str] = []
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if upto is not None and version > upto:
                break
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                cur = await conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
                if await cur.fetchone():
                    continue
                await conn.execute(sql.encode("utf-8"))
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(name)
                log.info("applied migration %s", name)
    return applied


async def open_pool(conninfo: str, max_size: int = 10) -> AsyncConnectionPool[AsyncConnection[dict]]:  # type: ignore[type-arg]
    pool: AsyncConnectionPool[AsyncConnection[dict]] = AsyncConnectionPool(  # type: ignore[type-arg]
        conninfo,
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        open=False,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True, timeout=30)
    return pool
