"""Where tests find their databases, and how they clean up after themselves."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from power_loop.store.migrations import session_tables
from power_loop.store.schema import SCHEMA_VERSION_TABLE, drop_tables
from power_loop.store.shared import forget_schema
from power_loop.store.store import Store

BACKENDS: tuple[str, ...] = ("sqlite", "postgresql", "mysql")
"""Every backend power_loop supports, by dialect name."""

_ENV = {"postgresql": "POWER_LOOP_TEST_PG_DSN", "mysql": "POWER_LOOP_TEST_MYSQL_DSN"}


class BackendUnavailable(RuntimeError):
    """No server is configured for a backend the tests were asked to cover."""


def backend_dsn(backend: str, directory: Path) -> str:
    """A DSN for ``backend``: a file in ``directory`` for SQLite, the env var otherwise.

    Raises:
        BackendUnavailable: the env var is not set. Tests must fail, not skip, then.
    """
    if backend == "sqlite":
        return str(directory / "power_loop.db")
    variable = _ENV[backend]
    dsn = os.environ.get(variable)
    if not dsn:
        raise BackendUnavailable(
            f"{variable} is not set, so the {backend} tests cannot run; start servers with "
            "`scripts/test` (which runs everything) or point the variable at a server, or "
            f"deselect the backend with --backends")
    return dsn


def fresh_prefix() -> str:
    """A table prefix no other test uses, so tests can share one database."""
    return f"t{uuid.uuid4().hex[:12]}_"


async def drop_store_tables(store: Store) -> None:
    """Drop every table the store created (its prefix only)."""
    forget_schema(store.table_prefix)  # loops from dsn= must check the schema again
    dialect = store.database.dialect
    async with store.database.autocommit() as conn:
        for statement in drop_tables(dialect, store.table_prefix,
                                     [*session_tables(), SCHEMA_VERSION_TABLE]):
            await conn.execute(statement)
        for statement in dialect.drop_feed_trigger(store.table_prefix):
            await conn.execute(statement)
