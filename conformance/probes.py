"""Looks at the database behind a store with plain SQL, bypassing the store's own API.

The conformance suite uses these to check what really is (or is not) in the tables:
a test that trusts the API to report its own side effects proves little.
"""

from __future__ import annotations

from datetime import datetime

from power_loop import Store, StoreError
from power_loop.store.migrations import session_tables
from power_loop.store.port import Database
from power_loop.store.records import from_us
from power_loop.store.schema import SCHEMA_VERSION_TABLE

SESSION_TABLES: tuple[str, ...] = tuple(t.name for t in session_tables())
"""Every table holding session data, without its prefix."""

NO_ROWS: dict[str, int] = dict.fromkeys(SESSION_TABLES, 0)
"""What :func:`session_row_counts` gives for a session that has no rows anywhere."""

ALL_TABLES: frozenset[str] = frozenset({*SESSION_TABLES, SCHEMA_VERSION_TABLE.name})
"""Every table power_loop creates, without its prefix."""

_SESSION_COLUMN = {t.name: t.session_column for t in session_tables()}


async def count_rows(store: Store, table: str, session_id: str | None = None) -> int:
    """Rows in ``table`` (unprefixed name), optionally only those of one session."""
    dialect = store._database.dialect
    sql = f"SELECT COUNT(*) FROM {dialect.quote(store.table_prefix + table)}"
    params: list[str] = []
    if session_id is not None:
        sql += f" WHERE {_SESSION_COLUMN[table]} = ?"
        params.append(session_id)
    async with store._database.transaction(write=False) as conn:
        row = await conn.fetchone(dialect.render(sql), params)
    assert row is not None
    return int(row[0])


async def database_now(store: Store) -> datetime:
    """The database clock now (the one leases and timers are due by), in UTC."""
    async with store._database.transaction(write=False) as conn:
        row = await conn.fetchone(store._database.dialect.render("SELECT {now}"))
    assert row is not None
    return from_us(int(row[0]))


async def raw_json_column(store: Store, table: str, column: str, session_id: str) -> str:
    """The text a JSON column really holds for one session's rows, one row per line."""
    dialect = store._database.dialect
    sql = (f"SELECT {column} FROM {dialect.quote(store.table_prefix + table)} "
           f"WHERE {_SESSION_COLUMN[table]} = ?")
    async with store._database.transaction(write=False) as conn:
        rows = await conn.fetch(dialect.render(sql), [session_id])
    return "\n".join(str(row[0]) for row in rows)


async def session_row_counts(store: Store, session_id: str) -> dict[str, int]:
    """How many rows each session table holds for ``session_id``."""
    return {table: await count_rows(store, table, session_id) for table in SESSION_TABLES}


async def existing_tables(database: Database, prefix: str) -> set[str]:
    """Which of power_loop's tables exist under ``prefix`` (probed by querying each)."""
    found: set[str] = set()
    for table in sorted(ALL_TABLES):
        sql = f"SELECT COUNT(*) FROM {database.dialect.quote(prefix + table)}"
        try:
            async with database.autocommit() as conn:
                await conn.fetch(sql)
        except StoreError:
            continue
        found.add(table)
    return found


async def version_rows(database: Database, prefix: str) -> dict[int, int]:
    """``{version: number of rows}`` in the schema version table."""
    table = database.dialect.quote(prefix + SCHEMA_VERSION_TABLE.name)
    async with database.autocommit() as conn:
        rows = await conn.fetch(f"SELECT version, COUNT(*) FROM {table} GROUP BY version")
    return {int(version): int(count) for version, count in rows}
