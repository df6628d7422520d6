"""SQLite through aiosqlite: the only module that imports aiosqlite.

One writer connection, serialized in-process by an asyncio lock and across processes by
``BEGIN IMMEDIATE`` (which takes the file's write lock up front, so a transaction never
fails half-way on a lock upgrade). Reads go to a small set of query-only connections: in
WAL mode they read a consistent snapshot while the writer works. ``:memory:`` is one
connection for everything, since each connection to it would be a separate database.

aiosqlite opens and closes the connections on its thread. Statements run on the event
loop's thread, straight on aiosqlite's underlying ``sqlite3`` connection: a statement of
a send takes a few microseconds, a round trip to another thread a hundred or more (a
ten-statement send went from ~1.3 ms to ~0.1 ms of database time). What may take long
(``VACUUM``, checkpoints, statements carrying large values) runs on a worker thread.
Nothing waits on a lock: the connections' busy timeout is zero, and a statement refused
with ``SQLITE_BUSY`` (another process holds the write lock) is retried after an
asynchronous sleep, with backoff, until the DSN's busy timeout runs out.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import aiosqlite.core

from power_loop.errors import (
    PowerLoopError,
    SchemaMissingError,
    StoreFileCorruptError,
    StoreFileError,
)
from power_loop.store.dsn import ParsedDSN
from power_loop.store.port import Row, translate_error
from power_loop.store.sqlite.dialect import SQLiteDialect
from power_loop.store.unclosed import watch

_DIALECT = SQLiteDialect()
_T = TypeVar("_T")
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_LARGE = 256 * 1024
"""A statement carrying a text or blob this long runs on a worker thread."""
_SLOW = ("VACUUM", "PRAGMA wal_checkpoint", "PRAGMA optimize")
"""Statements that may take long: they run on a worker thread."""


def _cannot_open(path: str) -> StoreFileError:
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        why = f"the directory {folder} does not exist: create it first, or fix the path"
    elif os.path.isdir(full):
        why = (f"it is a directory: name a file in it, such as "
               f"{os.path.join(full, 'app.db')}")
    elif not os.access(folder, os.W_OK | os.X_OK) or (
            os.path.exists(full) and not os.access(full, os.R_OK | os.W_OK)):
        why = ("this process may not read and write it: check the permissions of the "
               "file and of its directory")
    else:
        why = "check that the path names a file this process may create, read and write"
    return StoreFileError(f"sqlite: cannot open the database file {path!r}: {why}",
                          path=path)


def _read_only(path: str) -> StoreFileError:
    return StoreFileError(
        f"sqlite: the database file {path!r} is read-only: give this process write "
        "permission on it and on its directory (WAL mode keeps -wal and -shm files "
        "beside it)", path=path)


def _io_error(path: str) -> StoreFileError:
    return StoreFileError(
        f"sqlite: a disk I/O error on {path!r}: check the disk and the file system, and "
        "that no other program moved, truncated or deleted the file", path=path)


def _corrupt(path: str) -> StoreFileCorruptError:
    # Never the driver's text: it can quote what it read from the damaged file.
    return StoreFileCorruptError(
        f"sqlite: {path!r} is not a SQLite database, or it is damaged: check that the DSN "
        "names the right file; if it does, restore the file from a backup", path=path)


_FILE_CAUSES: dict[int, Callable[[str], StoreFileError]] = {
    8: _read_only,      # SQLITE_READONLY
    10: _io_error,      # SQLITE_IOERR
    11: _corrupt,       # SQLITE_CORRUPT
    14: _cannot_open,   # SQLITE_CANTOPEN
    26: _corrupt,       # SQLITE_NOTADB
}
"""Failures that are about the file, by primary result code, and what to say about each."""


def _failure(exc: BaseException, path: str) -> PowerLoopError:
    """The one place sqlite3's and aiosqlite's exceptions become power_loop's."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        cause = None if code is None else _FILE_CAUSES.get(code & 0xFF)
        if cause is not None:
            return cause(path)
        if str(exc).startswith("Could not decode to UTF-8"):
            return _corrupt(path)  # text that is not UTF-8, quoted in sqlite3's message
        if str(exc) == "unsupported file format":
            return _corrupt(path)  # a damaged header (SQLITE_ERROR, no code of its own)
    if isinstance(exc, UnicodeDecodeError):
        return _corrupt(path)  # a damaged name in the schema; the message shows its bytes
    return translate_error(_DIALECT, exc)


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None \
        and code & 0xFF in _BUSY_CODES


def _on_thread(sql: str, params: Sequence[Any]) -> bool:
    if sql.startswith(_SLOW):
        return True
    for p in params:  # noqa: SIM110 (a plain loop: any() with a generator costs more)
        if isinstance(p, (str, bytes)) and len(p) >= _LARGE:
            return True
    return False


class _Clock:
    """``pl_now_us()`` of one connection: the host's clock in microseconds, read once
    per statement (as SQL clocks are), never going back within the connection."""

    __slots__ = ("us",)

    def __init__(self) -> None:
        self.us = 0

    def tick(self) -> None:
        self.us = max(self.us, time.time_ns() // 1000)

    def __call__(self) -> int:
        return self.us


async def _threaded(run: Callable[[], _T]) -> _T:
    """``run()`` on a worker thread. If cancelled meanwhile, it lets the work finish
    first, so that nothing else uses the connection at the same time."""
    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what goes on
        raise


@dataclass(frozen=True, slots=True)
class _Handle:
    """One open connection: aiosqlite's, the ``sqlite3`` connection inside it (opened
    with ``check_same_thread=False``; only the holder of a :class:`SQLiteConnection`
    on it uses it, one statement at a time) and its clock."""

    conn: aiosqlite.Connection
    raw: sqlite3.Connection
    clock: _Clock
    path: str


class SQLiteConnection:
    """A :class:`~power_loop.store.port.Connection` over one aiosqlite connection."""

    __slots__ = ("_busy_timeout", "_clock", "_path", "_raw")

    def __init__(self, handle: _Handle, busy_timeout: float) -> None:
        self._raw = handle.raw
        self._path = handle.path
        self._clock = handle.clock
        self._busy_timeout = busy_timeout

    # execute and fetch run the common case (a statement with small values, the
    # database not busy) inline, with no closure and no await: they are most of a send.

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        threaded = _on_thread(sql, params)
        if not threaded:
            self._clock.tick()
            try:
                count: int = self._raw.execute(sql, params).rowcount
                return count
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
        return await self._retry(lambda: self._raw.execute(sql, params).rowcount, threaded)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._run(lambda: self._raw.executemany(sql, rows),
                        any(_on_thread(sql, row) for row in rows))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        threaded = _on_thread(sql, params)
        if not threaded:
            self._clock.tick()
            try:
                rows: list[Row] = self._raw.execute(sql, params).fetchall()
                return rows
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
        return await self._retry(lambda: self._raw.execute(sql, params).fetchall(), threaded)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def _run(self, run: Callable[[], _T], threaded: bool) -> _T:
        """``run()`` here (or on a worker thread when it may take long); while the
        database is busy, again after a pause, until the busy timeout runs out."""
        if not threaded:
            self._clock.tick()
            try:
                return run()  # the common case: no lock to wait for, no await at all
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
        return await self._retry(run, threaded)

    async def _retry(self, run: Callable[[], _T], threaded: bool) -> _T:
        """``run()`` on a worker thread (``threaded``), or again here after it found the
        database busy, pausing between attempts, until the busy timeout runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        pause, waited = 0.001, not threaded
        while True:
            if waited:
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(pause * 2, 0.05)
            self._clock.tick()
            try:
                return await _threaded(run) if threaded else run()
            except Exception as exc:
                if not _is_busy(exc) or loop.time() >= deadline:
                    raise _failure(exc, self._path) from exc
            waited = True

    def rollback(self) -> None:
        if self._raw.in_transaction:
            try:
                self._raw.execute("ROLLBACK")
            except sqlite3.Error:
                pass


class SQLiteDatabase:
    """A :class:`~power_loop.store.port.Database` over one SQLite file."""

    dialect = _DIALECT

    def __init__(self, writer: _Handle, readers: list[_Handle], busy_timeout: float) -> None:
        self._unclosed = watch(self, f"sqlite {writer.path!r}",
                               functools.partial(_let_go, [writer, *readers]))
        self._writer = writer
        self._busy_timeout = busy_timeout
        self._write_lock = asyncio.Lock()
        self._all_readers = readers
        self._readers: asyncio.Queue[_Handle] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)

    def transaction(self, *, write: bool = True) -> AbstractAsyncContextManager[SQLiteConnection]:
        if write or not self._all_readers:
            return _WriterTransaction(self, "BEGIN IMMEDIATE" if write else "BEGIN")
        return self._reader_transaction()

    @asynccontextmanager
    async def _reader_transaction(self) -> AsyncIterator[SQLiteConnection]:
        reader = await self._readers.get()
        try:
            async with self._transaction(reader, "BEGIN") as c:
                yield c
        finally:
            self._readers.put_nowait(reader)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SQLiteConnection]:
        async with self._write_lock:
            yield SQLiteConnection(self._writer, self._busy_timeout)

    @asynccontextmanager
    async def _transaction(self, handle: _Handle,
                           begin: str) -> AsyncIterator[SQLiteConnection]:
        wrapped = SQLiteConnection(handle, self._busy_timeout)
        # A transaction starts with a suspension point, as on the server engines (and as
        # when every statement went to aiosqlite's thread): a task cancelled meanwhile
        # stops here, before its transaction, rather than at its next await after it.
        await asyncio.sleep(0)
        try:
            await wrapped.execute(begin)
            yield wrapped
            await wrapped.execute("COMMIT")
        except BaseException:
            wrapped.rollback()  # on this thread, at once: nothing can come in between
            raise

    async def close(self) -> None:
        self._unclosed.detach()
        async with self._write_lock:
            for handle in [self._writer, *self._all_readers]:
                await handle.conn.close()


def _let_go(handles: list[_Handle]) -> None:
    """Close the connections of a database nobody closed, here and now, and stop their
    aiosqlite threads; no event loop is needed (aiosqlite's own ``stop`` looks for one,
    and may find none, or one about to close)."""
    for handle in handles:
        try:
            handle.raw.close()
        except sqlite3.Error:
            pass
        conn = handle.conn
        conn._running = False
        conn._connection = None  # or aiosqlite's __del__ warns about it a second time
        conn._tx.put_nowait((None, _stop_thread))


def _stop_thread() -> object:
    return aiosqlite.core._STOP_RUNNING_SENTINEL
class _WriterTransaction:
    """A transaction on the writer connection, under the writer lock: what
    :meth:`SQLiteDatabase._transaction` does, as a plain class (every write of a send
    goes through here)."""

    __slots__ = ("_begin", "_conn", "_db")

    def __init__(self, db: SQLiteDatabase, begin: str) -> None:
        self._db, self._begin = db, begin

    async def __aenter__(self) -> SQLiteConnection:
        db = self._db
        await db._write_lock.acquire()
        conn = SQLiteConnection(db._writer, db._busy_timeout)
        try:
            # The suspension point _transaction explains.
            await asyncio.sleep(0)
            await conn.execute(self._begin)
        except BaseException:
            conn.rollback()
            db._write_lock.release()
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        conn = self._conn
        try:
            if kind is not None:
                conn.rollback()  # on this thread, at once: nothing can come in between
                return
            try:
                await conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
        finally:
            self._db._write_lock.release()


async def _open(path: str, parsed: ParsedDSN, *, reader: bool) -> _Handle:
    options = parsed.options
    target, uri = path, False
    if not options.create and not _is_memory(path):
        # mode=rw: opening must not create the file (schema policies VERIFY and NONE).
        target, uri = _no_create_uri(path), True
    conn = aiosqlite.connect(target, isolation_level=None, timeout=options.busy_timeout,
                             uri=uri, check_same_thread=False)
    # A daemon: a process that never closes its store must still exit (the interpreter
    # waits for every other thread before it runs the exit handlers that release it).
    conn._thread.daemon = True
    try:
        await asyncio.wait_for(conn, timeout=options.connect_timeout)
    except BaseException as exc:
        # aiosqlite stops its worker thread without waiting for it; wait here, or the
        # thread may call back into an event loop that has closed by then.
        thread = getattr(conn, "_thread", None)
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5)
        if isinstance(exc, Exception):
            raise _failure(exc, path) from exc
        raise
    try:
        # The busy timeout makes a second process wait for the write lock instead of
        # failing; WAL lets readers work beside one writer; synchronous=NORMAL is
        # crash-safe in WAL mode (a power cut may lose the last commits; use FULL).
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(options.busy_timeout * 1000)}")
        if not reader:
            await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        await conn.execute_fetchall(f"PRAGMA synchronous = {options.synchronous.upper()}")
        if reader:
            await conn.execute_fetchall("PRAGMA query_only = 1")
        # From now on a busy database is waited for without blocking (SQLiteConnection).
        # (Each PRAGMA's rows are read: a statement left half-read blocks VACUUM.)
        await conn.execute_fetchall("PRAGMA busy_timeout = 0")
        raw, clock = conn._conn, _Clock()
        raw.create_function("pl_now_us", 0, clock)  # the dialect's now_us
    except Exception as exc:
        await conn.close()
        raise _failure(exc, path) from exc
    return _Handle(conn, raw, clock, path)


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
    readers: list[_Handle] = []
    try:
        if not _is_memory(path):
            for _ in range(parsed.options.readers):
                readers.append(await _open(path, parsed, reader=True))
    except BaseException:
        for handle in [writer, *readers]:
            await handle.conn.close()
        raise
    return SQLiteDatabase(writer, readers, parsed.options.busy_timeout)
