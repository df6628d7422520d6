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

Concurrency: each slot (one per session) holds one pooled connection for the whole run,
the least a pool can cost. SQLite has one writer connection shared under an
``asyncio.Lock``, as power_loop does: a second writer connection would only wait on the
file lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
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
    "SET time_zone = '+00:00', "
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


def _tables(dialect: Dialect, prefix: str) -> tuple[str, str, list[str]]:
    drops = drop_tables(dialect, prefix, [*session_tables(), SCHEMA_VERSION_TABLE])
    return dialect.quote(prefix + "sessions"), dialect.quote(prefix + "messages"), drops


def _session_insert(table: str, now: str, mark: str) -> str:
    # The row Store.create_session writes: no prompt, no metadata, no lease.
    return (f"INSERT INTO {table} (id, parent_id, created_at, updated_at, system_prompt, "
            f"metadata, next_seq, send_count, pending_send, lease_owner, lease_epoch, "
            f"lease_expires_at) VALUES ({mark}, NULL, {now}, {now}, 'null', '{{}}', 0, 0, "
            "NULL, NULL, 0, NULL)")


class SQLiteFloor:
    """aiosqlite, one writer connection, WAL and ``synchronous = NORMAL`` as power_loop."""

    def __init__(self, conn: Any, prefix: str, session_ids: Sequence[str], body: str) -> None:
        dialect = SQLiteDialect()
        sessions, messages, self._drops = _tables(dialect, prefix)
        now = dialect.now_us
        self._conn = conn
        self._lock = asyncio.Lock()
        self._ids = list(session_ids)
        self._body = body
        self._update = (f"UPDATE {sessions} SET next_seq = next_seq + 1, updated_at = {now} "
                        "WHERE id = ? RETURNING next_seq")
        self._insert = (f"INSERT INTO {messages} (session_id, seq, send_index, role, body, "
                        f"created_at) VALUES (?, ?, ?, ?, ?, {now})")
        self._new_session = _session_insert(sessions, now, "?")
        self.server = f"SQLite {sqlite3.sqlite_version} (journal_mode=wal, synchronous=normal)"

    @classmethod
    async def open(cls, path: str, prefix: str, session_ids: Sequence[str],
                   body: str) -> SQLiteFloor:
        import aiosqlite

        conn = await aiosqlite.connect(path, isolation_level=None)
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL"):
            await conn.execute(f"PRAGMA {pragma}")
        for statement in ddl_statements(SQLiteDialect(), prefix):
            await conn.execute(statement)
        floor = cls(conn, prefix, session_ids, body)
        for sid in session_ids:
            await conn.execute(floor._new_session, (sid,))
        return floor

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
        for statement in self._drops:
            await self._conn.execute(statement)
        await self._conn.close()


class PostgresFloor:
    """asyncpg, a pool of :data:`POOL_SIZE`; each slot keeps its connection."""

    def __init__(self, pool: Any, conns: list[Any], prefix: str, session_ids: Sequence[str],
                 body: str, server: str) -> None:
        dialect = PostgresDialect()
        sessions, messages, self._drops = _tables(dialect, prefix)
        now = dialect.now_us
        self._pool, self._conns = pool, conns
        self._ids = list(session_ids)
        self._body = body
        self._update = (f"UPDATE {sessions} SET next_seq = next_seq + 1, updated_at = {now} "
                        "WHERE id = $1 RETURNING next_seq")
        self._insert = (f"INSERT INTO {messages} (session_id, seq, send_index, role, body, "
                        f"created_at) VALUES ($1, $2, $3, $4, $5, {now})")
        self.server = server

    @classmethod
    async def open(cls, dsn: str, prefix: str, session_ids: Sequence[str],
                   body: str) -> PostgresFloor:
        import asyncpg

        dialect = PostgresDialect()
        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        conns = [await pool.acquire() for _ in range(POOL_SIZE)]
        head = conns[0]
        settings = [await head.fetchval(f"SHOW {name}")
                    for name in ("server_version", "fsync", "synchronous_commit")]
        server = (f"PostgreSQL {settings[0]} (fsync={settings[1]}, "
                  f"synchronous_commit={settings[2]})")
        async with head.transaction():
            for statement in ddl_statements(dialect, prefix):
                await head.execute(statement)
        sessions, _, _ = _tables(dialect, prefix)
        insert = _session_insert(sessions, dialect.now_us, "$1")
        for sid in session_ids:
            await head.execute(insert, sid)
        return cls(pool, conns, prefix, session_ids, body, server)

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
        for statement in self._drops:
            await self._conns[0].execute(statement)
        for conn in self._conns:
            await self._pool.release(conn)
        await self._pool.close()


class MySQLFloor:
    """aiomysql, a pool of :data:`POOL_SIZE`; each slot keeps its connection and cursor."""

    def __init__(self, pool: Any, conns: list[Any], cursors: list[Any], prefix: str,
                 session_ids: Sequence[str], body: str, server: str) -> None:
        dialect = MySQLDialect()
        sessions, messages, self._drops = _tables(dialect, prefix)
        now = dialect.now_us
        self._pool, self._conns, self._cursors = pool, conns, cursors
        self._ids = list(session_ids)
        self._body = body
        self._update = (f"UPDATE {sessions} SET next_seq = next_seq + 1, updated_at = {now} "
                        "WHERE id = %s")
        self._select = f"SELECT next_seq FROM {sessions} WHERE id = %s"
        self._insert = (f"INSERT INTO {messages} (session_id, seq, send_index, role, body, "
                        f"created_at) VALUES (%s, %s, %s, %s, %s, {now})")
        self.server = server

    @classmethod
    async def open(cls, dsn: str, prefix: str, session_ids: Sequence[str],
                   body: str) -> MySQLFloor:
        import aiomysql

        dialect = MySQLDialect()
        parts = urlsplit(dsn)
        pool = await aiomysql.create_pool(
            minsize=POOL_SIZE, maxsize=POOL_SIZE, autocommit=True, charset="utf8mb4",
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or ""), password=unquote(parts.password or ""),
            db=unquote(parts.path.lstrip("/")))
        conns = [await pool.acquire() for _ in range(POOL_SIZE)]
        cursors = [await conn.cursor() for conn in conns]
        for cursor in cursors:
            for statement in _MYSQL_SETUP:
                await cursor.execute(statement)
        head = cursors[0]
        await head.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
        version, flush = await head.fetchone()
        server = f"MySQL/MariaDB {version} (innodb_flush_log_at_trx_commit={flush})"
        for statement in ddl_statements(dialect, prefix):
            await head.execute(statement)
        sessions, _, _ = _tables(dialect, prefix)
        for sid in session_ids:
            await head.execute(_session_insert(sessions, dialect.now_us, "%s"), (sid,))
        return cls(pool, conns, cursors, prefix, session_ids, body, server)

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
        for statement in self._drops:
            await self._cursors[0].execute(statement)
        for cursor, conn in zip(self._cursors, self._conns, strict=True):
            await cursor.close()
            self._pool.release(conn)
        self._pool.close()
        await self._pool.wait_closed()


async def open_floor(backend: str, location: str, prefix: str, session_ids: Sequence[str],
                     body: str) -> Floor:
    """A floor for ``backend``: ``location`` is a file path (SQLite) or a DSN."""
    if backend == "sqlite":
        return await SQLiteFloor.open(location, prefix, session_ids, body)
    if backend == "postgresql":
        return await PostgresFloor.open(location, prefix, session_ids, body)
    if backend == "mysql":
        return await MySQLFloor.open(location, prefix, session_ids, body)
    raise ValueError(f"no floor for backend {backend!r}")
