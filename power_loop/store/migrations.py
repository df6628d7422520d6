"""Versioned migrations in a portable version table, and the schema policies.

A migration is a version number and the tables it creates; its DDL is idempotent, so a
migration interrupted on MySQL (where DDL commits as it goes) is simply run again. The
version table records each applied version. Several processes booting at once on an
empty database are serialized by a lock the dialect supplies (an advisory lock on
PostgreSQL, ``GET_LOCK`` on MySQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite); the
first migrates, the others find the work done.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from power_loop.errors import SchemaMissingError, SchemaVersionError, StoreError
from power_loop.store.port import Connection, Database, Dialect
from power_loop.store.schema import (
    FOLDS,
    MESSAGES,
    NOTES,
    PROJECTIONS,
    SCHEMA_VERSION_TABLE,
    SENDS,
    SESSION_LINKS,
    SESSIONS,
    TIMERS,
    WAITS,
    WORKFLOW_SIGNALS,
    WORKFLOW_STEPS,
    WORKFLOWS,
    Column,
    Index,
    Table,
    column_ddl,
    create_table,
    validate_prefix,
)


class SchemaPolicy(enum.Enum):
    """What :func:`~power_loop.open_store` does about the tables."""

    AUTO_CREATE = "auto_create"
    """Create or upgrade the tables as needed (the default)."""
    VERIFY = "verify"
    """Check they exist and are current; otherwise raise with the DDL to run."""
    NONE = "none"
    """Do nothing: the operator provisions the schema."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: the tables it creates.

    Columns and indexes that a version adds to tables created before it are declared on
    the tables themselves (``since=``); the migration applies them with ``ALTER TABLE``
    and ``CREATE INDEX`` where they are missing.
    """

    version: int
    description: str
    tables: tuple[Table, ...] = ()
    statements: Callable[[Dialect, str], list[str]] | None = None
    """More idempotent DDL for a dialect and prefix (functions, triggers), if any."""


def _feed_trigger(dialect: Dialect, prefix: str) -> list[str]:
    return dialect.feed_trigger(prefix, f"{prefix}feed")


def _feed_trigger_with_waits(dialect: Dialect, prefix: str) -> list[str]:
    # Version 6's trigger, replaced: a wait opened or decided (a bump of wait_events,
    # a column version 8 adds) wakes watchers too.
    return dialect.feed_trigger(prefix, f"{prefix}feed", waits=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sessions, messages, sends, session leases", (SESSIONS, MESSAGES, SENDS)),
    Migration(2, "projections, fold journal, agent notes", (PROJECTIONS, FOLDS, NOTES)),
    Migration(3, "timers, resume attempts and parking", (TIMERS,)),
    Migration(4, "child session links (sub-agents)", (SESSION_LINKS,)),
    Migration(5, "waits for approvals and answers, timer kinds", (WAITS,)),
    Migration(6, "session feed wake-ups (a NOTIFY trigger on PostgreSQL)",
              statements=_feed_trigger),
    Migration(7, "workflow journal: workflows, steps, signals",
              (WORKFLOWS, WORKFLOW_STEPS, WORKFLOW_SIGNALS)),
    Migration(8, "waits in the session feed: numbered wait events",
              statements=_feed_trigger_with_waits),
)
LATEST_VERSION = MIGRATIONS[-1].version


def additions(migration: Migration) -> list[tuple[Table, Column | Index]]:
    """The columns and indexes ``migration`` adds to tables that existed before it."""
    earlier = [t for m in MIGRATIONS if m.version < migration.version for t in m.tables]
    found: list[tuple[Table, Column | Index]] = []
    for table in earlier:
        found.extend((table, c) for c in table.columns if c.since == migration.version)
        found.extend((table, i) for i in table.indexes if i.since == migration.version)
    return found


def _addition_ddl(dialect: Dialect, prefix: str, table: Table, item: Column | Index) -> str:
    name = prefix + table.name
    if isinstance(item, Column):
        return f"ALTER TABLE {dialect.quote(name)} ADD COLUMN {column_ddl(dialect, item)}"
    index = f"{name}_{item.suffix}"
    if dialect.inline_indexes:  # no CREATE INDEX IF NOT EXISTS: checked before running
        return (f"CREATE {'UNIQUE ' if item.unique else ''}INDEX {dialect.quote(index)} ON "
                f"{dialect.quote(name)} ({', '.join(dialect.quote(c) for c in item.columns)})")
    return dialect.create_index(index, name, item.columns, item.unique)


async def _apply_addition(conn: Connection, dialect: Dialect, prefix: str, table: Table,
                          item: Column | Index) -> None:
    name = prefix + table.name
    if isinstance(item, Column):
        probe, args = dialect.column_exists(), [name, item.name]
    else:
        probe, args = dialect.index_exists(), [name, f"{name}_{item.suffix}"]
    if await conn.fetchone(dialect.render(probe), args) is None:
        await conn.execute(_addition_ddl(dialect, prefix, table, item))


def session_tables() -> tuple[Table, ...]:
    """Every table holding a session's data, sessions first, in creation order."""
    return tuple(t for m in MIGRATIONS for t in m.tables if t.session_column is not None)


def _lock_key(prefix: str) -> int:
    return zlib.crc32(f"power_loop:{prefix}".encode()) & 0x7FFFFFFF


def _version_insert(dialect: Dialect, prefix: str) -> str:
    # Insert-or-ignore, so the DDL script can be run again and over a partial schema.
    return dialect.upsert(prefix + SCHEMA_VERSION_TABLE.name,
                          ("version", "description", "applied_at"), ("version",), ())


def ddl_statements(dialect: Dialect, prefix: str, after_version: int = 0) -> list[str]:
    """The statements that bring a schema at ``after_version`` to the latest, literal.

    Every statement is idempotent: the script can be run twice, or over a schema with a
    table missing.
    """
    validate_prefix(prefix)
    statements = create_table(dialect, prefix, SCHEMA_VERSION_TABLE)
    insert = _version_insert(dialect, prefix)
    for migration in MIGRATIONS:
        if migration.version <= after_version:
            continue
        for table in migration.tables:
            statements.extend(create_table(dialect, prefix, table))
        if after_version > 0:  # from scratch, every table is created in its latest shape
            statements.extend(_addition_ddl(dialect, prefix, table, item)
                              for table, item in additions(migration))
        if migration.statements is not None:
            statements.extend(migration.statements(dialect, prefix))
        description = migration.description.replace("'", "''")
        statements.append(insert.replace("?", str(migration.version), 1)
                          .replace("?", f"'{description}'", 1).replace("?", dialect.ddl_now_us, 1))
    return statements


def render_ddl(dialect: Dialect, prefix: str, after_version: int = 0) -> str:
    """:func:`ddl_statements` as one script, each statement ending in ``;``."""
    return "\n\n".join(f"{s};" for s in ddl_statements(dialect, prefix, after_version)) + "\n"


async def _read_version(conn: Connection, dialect: Dialect, prefix: str) -> int | None:
    """The schema version, or ``None`` when the version table does not exist."""
    name = prefix + SCHEMA_VERSION_TABLE.name
    if await conn.fetchone(dialect.render(dialect.table_exists()), [name]) is None:
        return None
    row = await conn.fetchone(f"SELECT MAX(version) FROM {dialect.quote(name)}")
    return int(row[0]) if row is not None and row[0] is not None else 0


async def _missing_tables(conn: Connection, dialect: Dialect, prefix: str) -> list[str]:
    exists = dialect.render(dialect.table_exists())
    names = [prefix + t.name for m in MIGRATIONS for t in m.tables]
    return [n for n in names if await conn.fetchone(exists, [n]) is None]


async def _apply(conn: Connection, dialect: Dialect, prefix: str) -> None:
    """Create the version table, then apply what is pending; the caller holds the lock."""
    for statement in create_table(dialect, prefix, SCHEMA_VERSION_TABLE):
        await conn.execute(statement)
    current = await _read_version(conn, dialect, prefix) or 0
    _check_not_newer(dialect, current)
    insert = dialect.render(_version_insert(dialect, prefix))
    now = await conn.fetchone(f"SELECT {dialect.now_us}")
    assert now is not None
    for migration in MIGRATIONS:
        # Idempotent, so applied versions are re-run too: a table dropped by hand
        # comes back, and a migration cut short on MySQL (no transactional DDL) finishes.
        for table in migration.tables:
            for statement in create_table(dialect, prefix, table):
                await conn.execute(statement)
        for table, item in additions(migration):
            await _apply_addition(conn, dialect, prefix, table, item)
        if migration.statements is not None:
            for statement in migration.statements(dialect, prefix):
                await conn.execute(statement)
        if migration.version > current:
            await conn.execute(insert, [migration.version, migration.description, now[0]])


def _check_not_newer(dialect: Dialect, version: int) -> None:
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"the database schema is at version {version} but this power_loop knows only "
            f"up to {LATEST_VERSION}; upgrade power-loop", backend=dialect.name)


async def migrate(db: Database, prefix: str) -> None:
    """Bring the schema to the latest version, safely against concurrent boots."""
    dialect = db.dialect
    lock, unlock = dialect.migration_lock(_lock_key(prefix))
    if dialect.transactional_ddl:
        async with db.transaction() as conn:
            if lock is not None:
                await conn.fetch(lock)
            await _apply(conn, dialect, prefix)
        return
    async with db.autocommit() as conn:
        if lock is not None:
            row = await conn.fetchone(lock)
            if row is None or row[0] != 1:
                raise StoreError("timed out waiting for another process's schema migration",
                                 backend=dialect.name)
        try:
            await _apply(conn, dialect, prefix)
        finally:
            if unlock is not None:
                await conn.fetch(unlock)


async def ensure_schema(db: Database, prefix: str, policy: SchemaPolicy) -> None:
    """Apply ``policy``: create/upgrade, verify, or leave the schema alone."""
    if policy is SchemaPolicy.NONE:
        return
    dialect = db.dialect
    async with db.autocommit() as conn:
        version = await _read_version(conn, dialect, prefix)
        if version is not None:
            _check_not_newer(dialect, version)
        if version == LATEST_VERSION:
            missing = await _missing_tables(conn, dialect, prefix)
            if not missing:
                return
            if policy is SchemaPolicy.VERIFY:
                raise SchemaMissingError(
                    f"tables {', '.join(missing)} are missing although the version table "
                    f"says {version}", backend=dialect.name,
                    ddl=render_ddl(dialect, prefix))
    if policy is SchemaPolicy.VERIFY:
        raise SchemaMissingError(
            "the power_loop tables are missing" if version is None else
            f"the power_loop schema is at version {version}, this library needs "
            f"{LATEST_VERSION}", backend=dialect.name,
            ddl=render_ddl(dialect, prefix, version or 0))
    await migrate(db, prefix)
