"""Where tests find their databases, and how they clean up after themselves."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from power_loop.store.migrations import session_tables
from power_loop.store.registry import backend_named, registered_backends
from power_loop.store.schema import SCHEMA_VERSION_TABLE, drop_tables
from power_loop.store.shared import forget_schema
from power_loop.store.store import Store

BACKENDS: tuple[str, ...] = ("sqlite", "postgresql", "mysql")
"""Every backend power_loop ships, by dialect name: what the tests run on by default."""

_ENV = {"postgresql": "POWER_LOOP_TEST_PG_DSN", "mysql": "POWER_LOOP_TEST_MYSQL_DSN"}


class BackendUnavailable(RuntimeError):
    """No server is configured for a backend the tests were asked to cover."""


def certifiable_backends() -> tuple[str, ...]:
    """The backends the conformance suite can run on: the built-in ones and every
    registered backend (``register_backend`` or a ``power_loop.backends`` entry point)
    that says how to get a test database (``StoreBackend.test_dsn``)."""
    return tuple(name for name in registered_backends() if name in BACKENDS or (
        (found := backend_named(name)) is not None and found.test_dsn is not None))


def backend_dsn(backend: str, directory: Path) -> str:
    """A DSN for ``backend``: a file in ``directory`` for SQLite, the env var for
    PostgreSQL and MySQL, what its ``test_dsn`` says for a registered backend.

    Raises:
        BackendUnavailable: the env var is not set, or the backend is not registered or
            has no ``test_dsn``. Tests must fail, not skip, then.
    """
    if backend == "sqlite":
        return str(directory / "power_loop.db")
    if backend not in _ENV:
        registered = backend_named(backend)
        if registered is None or registered.test_dsn is None:
            raise BackendUnavailable(
                f"backend {backend!r} is not registered with a test_dsn, so the suite "
                "cannot open it; register it (register_backend or a power_loop.backends "
                "entry point, loaded before the tests: pytest -p your.plugin) with "
                "StoreBackend(test_dsn=...)")
        return registered.test_dsn(directory)
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
    dialect = store._database.dialect
    async with store._database.autocommit() as conn:
        for statement in drop_tables(dialect, store.table_prefix,
                                     [*session_tables(), SCHEMA_VERSION_TABLE]):
            await conn.execute(statement)
        for statement in dialect.drop_feed_trigger(store.table_prefix):
            await conn.execute(statement)
