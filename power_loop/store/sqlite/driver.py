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
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from power_loop.errors import SchemaMissingError
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
    try:
        # BEGIN is inside the try: if this task is cancelled while BEGIN runs on the
        # connection's thread, the ROLLBACK below still follows it there.
        await wrapped.execute(begin)
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
    target, uri = path, False
    if not options.create and not _is_memory(path):
        # mode=rw: opening must not create the file (schema policies VERIFY and NONE).
        target, uri = _no_create_uri(path), True
    conn = aiosqlite.connect(target, isolation_level=None, timeout=options.busy_timeout,
                             uri=uri)
    try:
        await asyncio.wait_for(conn, timeout=options.connect_timeout)
    except BaseException as exc:
        # aiosqlite stops its worker thread without waiting for it; wait here, or the
        # thread may call back into an event loop that has closed by then.
        thread = getattr(conn, "_thread", None)
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5)
        if isinstance(exc, Exception):
            raise translate_error(_DIALECT, exc) from exc
        raise
    try:
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
        await conn.close()
        raise translate_error(_DIALECT, exc) from exc
    return conn


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _no_create_uri(path: str) -> str:
    return Path(os.path.abspath(path)).as_uri() + "?mode=rw"


def _is_memory(path: str) -> bool:
    return path == ":memory:" or path.startswith("file::memory:")


async def connect(parsed: ParsedDSN) -> SQLiteDatabase:
    """Open the file (created if absent, unless told not to) in WAL mode, with readers."""
    path = parsed.location
    if not parsed.options.create and not _is_memory(path) and not _exists(path):
        raise SchemaMissingError(f"the SQLite database file {path!r} does not exist",
                                 backend="sqlite", ddl="")
    writer = await _open(path, parsed, reader=False)
    readers: list[aiosqlite.Connection] = []
    try:
        if not _is_memory(path):
            for _ in range(parsed.options.readers):
                readers.append(await _open(path, parsed, reader=True))
    except BaseException:
        for conn in [writer, *readers]:
            await conn.close()
        raise
    return SQLiteDatabase(writer, readers)
