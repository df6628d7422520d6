"""SQLite through aiosqlite: the only module that imports aiosqlite.

One writer connection, serialized in-process by an asyncio lock and across processes by
``BEGIN IMMEDIATE`` (which takes the file's write lock up front, so a transaction never
fails half-way on a lock upgrade) with a busy timeout. Reads go to a small set of
query-only connections: in WAL mode they read a consistent snapshot while the writer
works. ``:memory:`` is one connection for everything, since each connection to it would
be a separate database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from power_loop.store.dsn import ParsedDSN
from power_loop.store.port import Row, translate_error
from power_loop.store.sqlite.dialect import SQLiteDialect

_DIALECT = SQLiteDialect()


class SQLiteConnection:
    """A :class:`~power_loop.store.port.Connection` over one aiosqlite connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cursor = await self._conn.execute(sql, params)
        except Exception as exc:
            raise translate_error(_DIALECT, exc) from exc
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except Exception as exc:
            raise translate_error(_DIALECT, exc) from exc

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self._conn.execute_fetchall(sql, params))
        except Exception as exc:
            raise translate_error(_DIALECT, exc) from exc

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None


class SQLiteDatabase:
    """A :class:`~power_loop.store.port.Database` over one SQLite file."""

    dialect = _DIALECT

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._all_readers = readers
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[SQLiteConnection]:
        if write or not self._all_readers:
            begin = "BEGIN IMMEDIATE" if write else "BEGIN"
            async with self._write_lock, _transaction(self._writer, begin) as c:
                yield c
            return
        reader = await self._readers.get()
        try:
            async with _transaction(reader, "BEGIN") as c:
                yield c
        finally:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SQLiteConnection]:
        async with self._write_lock:
            yield SQLiteConnection(self._writer)

    async def close(self) -> None:
        async with self._write_lock:
            for conn in [self._writer, *self._all_readers]:
                await conn.close()


@asynccontextmanager
async def _transaction(conn: aiosqlite.Connection, begin: str) -> AsyncIterator[SQLiteConnection]:
    wrapped = SQLiteConnection(conn)
    await wrapped.execute(begin)
    try:
        yield wrapped
        await wrapped.execute("COMMIT")
    except BaseException:
        # Queued on the connection's thread before any await, so it runs even when this
        # task is being cancelled, and before whatever the next holder sends.
        try:
            await conn.execute("ROLLBACK")
        except Exception:
            pass
        raise


async def _open(path: str, parsed: ParsedDSN, *, reader: bool) -> aiosqlite.Connection:
    options = parsed.options
    try:
        conn = await asyncio.wait_for(
            aiosqlite.connect(path, isolation_level=None, timeout=options.busy_timeout),
            timeout=options.connect_timeout)
        # The busy timeout makes a second process wait for the write lock instead of
        # failing; WAL lets readers work beside one writer; synchronous=NORMAL is
        # crash-safe in WAL mode (a power cut may lose the last commits; use FULL).
        await conn.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
        if not reader:
            await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
        if reader:
            await conn.execute("PRAGMA query_only = 1")
    except Exception as exc:
        raise translate_error(_DIALECT, exc) from exc
    return conn


async def connect(parsed: ParsedDSN) -> SQLiteDatabase:
    """Open the file (created if absent) in WAL mode with its reader connections."""
    path = parsed.location
    memory = path == ":memory:" or path.startswith("file::memory:")
    writer = await _open(path, parsed, reader=False)
    readers = [] if memory else [await _open(path, parsed, reader=True)
                                 for _ in range(parsed.options.readers)]
    return SQLiteDatabase(writer, readers)
