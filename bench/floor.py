"""The floor: an append written directly against each driver, with no power_loop code.

Each append is what ``Store.append_messages`` does for one message, in the same
transaction shape, on the same tables:

    BEGIN
    UPDATE <sessions> SET next_seq = next_seq + 1, updated_at = <now> WHERE id = ?
        -- RETURNING next_seq (SQLite, PostgreSQL); MySQL: SELECT next_seq ... WHERE id = ?
    INSERT INTO <messages> (session_id, seq, send_index, role, body, created_at) ...
    COMMIT

Only SQL text is borrowed from power_loop: the tables are created from
``ddl_statements`` (identical columns and indexes) and the clock expression is the
dialect's ``now_us`` (identical rows). Everything timed is driver calls.

The raw connections (:class:`SQLiteRaw`, :class:`PostgresRaw`, :class:`MySQLRaw`) are
shared with the send floor (:mod:`bench.send_floor`): power_loop's connection settings
and tables, opened without power_loop.

Concurrency: each slot (one per session) holds one pooled connection for the whole run,
the least a pool can cost. SQLite has one writer connection shared under an
``asyncio.Lock``, as power_loop does: a second writer connection would only wait on the
file lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from power_loop.store.migrations import ddl_statements, session_tables
from power_loop.store.mysql.dialect import MySQLDialect
from power_loop.store.port import Dialect
from power_loop.store.postgres.dialect import PostgresDialect
from power_loop.store.schema import SCHEMA_VERSION_TABLE, drop_tables
from power_loop.store.sqlite.dialect import SQLiteDialect

POOL_SIZE = 10
"""Connections per pool: one per concurrent session, as power_loop's default pool."""

_MYSQL_SETUP = (
    # power_loop's per-connection settings: the clock and the locking behaviour must match.
    "SET time_zone = '+00:00', sql_notes = 0, "
    "sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,NO_ENGINE_SUBSTITUTION'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
)


class Floor(Protocol):
    """Raw-driver appends into one prefix's tables; ``slot`` picks the session."""

    server: str
    """The server's version and durability settings, for the report header."""

    async def append(self, slot: int) -> None: ...

    async def close(self) -> None:
        """Drop the tables and close the connections."""
        ...


# -- raw connections ---------------------------------------------------------------------


class Raw(Protocol):
    """Raw driver connections to tables created by power_loop's DDL under ``prefix``."""

    dialect: Dialect
    mark: str
    """The driver's placeholder for argument ``n``, as a format string: ``?``, ``${n}``."""
    server: str

    def table(self, name: str) -> str:
        """The quoted name of power_loop's table ``name`` (``sessions``...)."""
        ...

    async def setup(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run an untimed statement outside any transaction (creating sessions...)."""
        ...

    async def close(self) -> None:
        """Drop the tables and close the connections."""
        ...


class _Tables:
    def __init__(self, dialect: Dialect, prefix: str) -> None:
        self.dialect = dialect
        self.prefix = prefix
        self.drops = drop_tables(dialect, prefix, [*session_tables(), SCHEMA_VERSION_TABLE])

    def table(self, name: str) -> str:
        return self.dialect.quote(self.prefix + name)


def session_insert(raw: Raw) -> str:
    """The row ``Store.create_session`` writes (no prompt, metadata or lease), id as arg 1."""
    now, mark = raw.dialect.now_us, raw.mark.format(n=1)
    return (f"INSERT INTO {raw.table('sessions')} (id, parent_id, created_at, updated_at, "
            "system_prompt, metadata, next_seq, send_count, pending_send, lease_owner, "
            f"lease_epoch, lease_expires_at, incarnation) VALUES ({mark}, NULL, {now}, {now}, "
            f"'null', '{{}}', 0, 0, NULL, NULL, 0, NULL, '{uuid.uuid4().hex}')")


class InlineSQLite:
    """A ``sqlite3`` connection behind aiosqlite's call shapes, each statement run at once
    on the event loop's thread: what power_loop's adapter does on its hot path, with
    nothing of power_loop around it."""

    def __init__(self, path: str) -> None:
        self.raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # power_loop's SQLite clock (see power_loop/store/sqlite/dialect.py).
        self.raw.create_function("pl_now_us", 0, lambda: time.time_ns() // 1000)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.raw.execute(sql, tuple(args)).rowcount

    async def execute_fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.raw.execute(sql, tuple(args)).fetchall()

    async def close(self) -> None:
        self.raw.close()


class SQLiteRaw(_Tables):
    """One ``sqlite3`` connection with WAL and ``synchronous = NORMAL``, as power_loop."""

    mark = "?"

    def __init__(self, conn: InlineSQLite, prefix: str) -> None:
        super().__init__(SQLiteDialect(), prefix)
        self.conn = conn
        self.lock = asyncio.Lock()
        """Held around each transaction, as power_loop's adapter holds its writer lock."""
        self.server = f"SQLite {sqlite3.sqlite_version} (journal_mode=wal, synchronous=normal)"

    @classmethod
    async def open(cls, path: str, prefix: str) -> SQLiteRaw:
        conn = InlineSQLite(path)
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL"):
            await conn.execute_fetchall(f"PRAGMA {pragma}")
        for statement in ddl_statements(SQLiteDialect(), prefix):
            await conn.execute(statement)
        return cls(conn, prefix)

    async def setup(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self.conn.execute(sql, tuple(args))

    async def close(self) -> None:
        for statement in self.drops:
            await self.conn.execute(statement)
        await self.conn.close()


class PostgresRaw(_Tables):
    """An asyncpg pool with ``size`` connections acquired up front (``conns``)."""

    mark = "${n}"

    def __init__(self, pool: Any, conns: list[Any], prefix: str, server: str) -> None:
        super().__init__(PostgresDialect(), prefix)
        self.pool, self.conns, self.server = pool, conns, server

    @classmethod
    async def open(cls, dsn: str, prefix: str, size: int = POOL_SIZE) -> PostgresRaw:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
        conns = [await pool.acquire() for _ in range(size)]
        head = conns[0]
        settings = [await head.fetchval(f"SHOW {name}")
                    for name in ("server_version", "fsync", "synchronous_commit")]
        server = (f"PostgreSQL {settings[0]} (fsync={settings[1]}, "
                  f"synchronous_commit={settings[2]})")
        async with head.transaction():
            for statement in ddl_statements(PostgresDialect(), prefix):
                await head.execute(statement)
        return cls(pool, conns, prefix, server)

    async def setup(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self.conns[0].execute(sql, *args)

    async def close(self) -> None:
        for statement in self.drops:
            await self.conns[0].execute(statement)
        for conn in self.conns:
            await self.pool.release(conn)
        await self.pool.close()


class MySQLRaw(_Tables):
    """An aiomysql pool with ``size`` connections and a cursor each, power_loop's settings."""

    mark = "%s"

    def __init__(self, pool: Any, conns: list[Any], cursors: list[Any], prefix: str,
                 server: str) -> None:
        super().__init__(MySQLDialect(), prefix)
        self.pool, self.conns, self.cursors, self.server = pool, conns, cursors, server

    @classmethod
    async def open(cls, dsn: str, prefix: str, size: int = POOL_SIZE) -> MySQLRaw:
        import aiomysql

        parts = urlsplit(dsn)
        pool = await aiomysql.create_pool(
            minsize=size, maxsize=size, autocommit=True, charset="utf8mb4",
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or ""), password=unquote(parts.password or ""),
            db=unquote(parts.path.lstrip("/")))
        conns = [await pool.acquire() for _ in range(size)]
        cursors = [await conn.cursor() for conn in conns]
        for cursor in cursors:
            for statement in _MYSQL_SETUP:
                await cursor.execute(statement)
        head = cursors[0]
        await head.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
        version, flush = await head.fetchone()
        server = f"MySQL/MariaDB {version} (innodb_flush_log_at_trx_commit={flush})"
        for statement in ddl_statements(MySQLDialect(), prefix):
            await head.execute(statement)
        return cls(pool, conns, cursors, prefix, server)

    async def setup(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self.cursors[0].execute(sql, tuple(args))

    async def close(self) -> None:
        for statement in self.drops:
            await self.cursors[0].execute(statement)
        for cursor, conn in zip(self.cursors, self.conns, strict=True):
            await cursor.close()
            self.pool.release(conn)
        self.pool.close()
        await self.pool.wait_closed()


async def open_raw(backend: str, location: str, prefix: str, size: int = POOL_SIZE) -> Raw:
    """Raw connections for ``backend``: ``location`` is a file path (SQLite) or a DSN."""
    if backend == "sqlite":
        return await SQLiteRaw.open(location, prefix)
    if backend == "postgresql":
        return await PostgresRaw.open(location, prefix, size)
    if backend == "mysql":
        return await MySQLRaw.open(location, prefix, size)
    raise ValueError(f"no raw driver for backend {backend!r}")


# -- the append floors -------------------------------------------------------------------


def _append_sql(raw: Raw, returning: str) -> tuple[str, str]:
    now = raw.dialect.now_us
    m = [raw.mark.format(n=n) for n in range(1, 6)]
    update = (f"UPDATE {raw.table('sessions')} SET next_seq = next_seq + 1, updated_at = {now} "
              f"WHERE id = {m[0]}{returning}")
    insert = (f"INSERT INTO {raw.table('messages')} (session_id, seq, send_index, role, body, "
              f"created_at) VALUES ({', '.join(m)}, {now})")
    return update, insert


class SQLiteFloor:
    """Appends through one ``sqlite3`` connection under a lock, statements run inline."""

    def __init__(self, raw: SQLiteRaw, session_ids: Sequence[str], body: str) -> None:
        self._raw, self._conn, self._lock = raw, raw.conn, raw.lock
        self._ids = list(session_ids)
        self._body = body
        self._update, self._insert = _append_sql(raw, " RETURNING next_seq")
        self.server = raw.server

    async def append(self, slot: int) -> None:
        conn, sid = self._conn, self._ids[slot]
        async with self._lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows = await conn.execute_fetchall(self._update, (sid,))
                seq = next(iter(rows))[0] - 1
                await conn.execute(self._insert, (sid, seq, 0, "user", self._body))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        await self._raw.close()


class PostgresFloor:
    """Appends through asyncpg; each slot keeps its pooled connection."""

    def __init__(self, raw: PostgresRaw, session_ids: Sequence[str], body: str) -> None:
        self._raw, self._conns = raw, raw.conns
        self._ids = list(session_ids)
        self._body = body
        self._update, self._insert = _append_sql(raw, " RETURNING next_seq")
        self.server = raw.server

    async def append(self, slot: int) -> None:
        conn, sid = self._conns[slot], self._ids[slot]
        await conn.execute("BEGIN")
        try:
            seq = await conn.fetchval(self._update, sid) - 1
            await conn.execute(self._insert, sid, seq, 0, "user", self._body)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._raw.close()


class MySQLFloor:
    """Appends through aiomysql; each slot keeps its connection and cursor."""

    def __init__(self, raw: MySQLRaw, session_ids: Sequence[str], body: str) -> None:
        self._raw, self._cursors = raw, raw.cursors
        self._ids = list(session_ids)
        self._body = body
        self._update, self._insert = _append_sql(raw, "")
        self._select = f"SELECT next_seq FROM {raw.table('sessions')} WHERE id = %s"
        self.server = raw.server

    async def append(self, slot: int) -> None:
        cursor, sid = self._cursors[slot], self._ids[slot]
        await cursor.execute("BEGIN")
        try:
            await cursor.execute(self._update, (sid,))
            await cursor.execute(self._select, (sid,))
            (seq,) = await cursor.fetchone()
            await cursor.execute(self._insert, (sid, seq - 1, 0, "user", self._body))
            await cursor.execute("COMMIT")
        except BaseException:
            await cursor.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._raw.close()


async def open_floor(backend: str, location: str, prefix: str, session_ids: Sequence[str],
                     body: str) -> Floor:
    """An append floor for ``backend``: ``location`` is a file path (SQLite) or a DSN."""
    raw = await open_raw(backend, location, prefix)
    try:
        insert = session_insert(raw)
        for sid in session_ids:
            await raw.setup(insert, [sid])
    except BaseException:
        await raw.close()
        raise
    if isinstance(raw, SQLiteRaw):
        return SQLiteFloor(raw, session_ids, body)
    if isinstance(raw, PostgresRaw):
        return PostgresFloor(raw, session_ids, body)
    assert isinstance(raw, MySQLRaw)
    return MySQLFloor(raw, session_ids, body)
