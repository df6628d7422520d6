"""SQLite through the standard library's ``sqlite3``, on connections this module owns.

One writer connection, serialized in-process by an asyncio lock and across processes by
``BEGIN IMMEDIATE`` (which takes the file's write lock up front, so a transaction never
fails half-way on a lock upgrade). Reads go to a small set of query-only connections: in
WAL mode they read a consistent snapshot while the writer works. ``:memory:`` is one
connection for everything, since each connection to it would be a separate database.

What runs where. Connections are opened and closed on a worker thread (opening may wait
for a lock or a slow disk; closing the last one checkpoints the WAL). A statement runs on
the event loop's thread: one of a send takes a few microseconds, a round trip to another
thread fifty or more (a ten-statement send went from ~1.3 ms to ~0.1 ms of database time
when statements left aiosqlite's thread). What may take long runs on a worker thread
instead: ``VACUUM`` and explicit checkpoints; a statement carrying 256 KB of text or
more; ``COMMIT`` when ``synchronous`` is ``full`` or ``extra`` (it fsyncs the WAL: 7 ms
median, 51 ms worst, were measured on the loop; under ``normal`` a commit in WAL mode
only writes, and fsyncs wait for checkpoints); and the rest of a result once fetching it
has taken :data:`_INLINE_READ` (a 60 MB session took 634 ms to read on the loop).
Checkpoints run on worker threads, on a connection of their own (:mod:`.checkpoints`),
never inside a commit.

Nothing waits on a lock: the connections' busy timeout is zero, and a statement refused
with ``SQLITE_BUSY`` (another process holds the write lock) is retried after an
asynchronous sleep, with backoff, until the DSN's busy timeout runs out: one budget for
the whole store operation (:data:`~power_loop.store.port.retry_deadline`), not one per
statement or per attempt.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from power_loop.errors import (
    PowerLoopError,
    SchemaMissingError,
    StoreFileCorruptError,
    StoreFileError,
)
from power_loop.store.dsn import ParsedDSN
from power_loop.store.port import Row, retry_deadline, translate_error
from power_loop.store.sqlite import checkpoints
from power_loop.store.sqlite.checkpoints import Checkpointer
from power_loop.store.sqlite.dialect import SQLiteDialect
from power_loop.store.sqlite.threads import threaded
from power_loop.store.unclosed import watch

_DIALECT = SQLiteDialect()
_T = TypeVar("_T")
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_LARGE = 256 * 1024
"""A statement carrying this many bytes of text and blobs runs on a worker thread."""
_SLOW = ("VACUUM", "PRAGMA wal_checkpoint", "PRAGMA optimize")
"""Statements that may take long: they run on a worker thread."""
_SIZED = (str, bytes)
_INLINE_READ = 0.002
"""Seconds a result is fetched on the event loop before the rest moves to a thread."""
_PAGES_PER_COMMIT = 4
"""WAL pages a small write transaction adds (table and index leaves): for checkpoints."""
_FSYNCING = frozenset({"full", "extra"})
"""``synchronous`` levels whose ``COMMIT`` fsyncs the WAL (``normal`` leaves that to
checkpoints in WAL mode, ``off`` never does)."""


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
    """The one place sqlite3's exceptions become power_loop's."""
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


def _weigh(sql: str, params: Sequence[Any]) -> tuple[int, bool]:
    """The bytes of text and blobs a statement carries, and whether it runs on a thread."""
    size = 0
    for p in params:
        if isinstance(p, _SIZED):
            size += len(p)
    return size, size >= _LARGE or sql.startswith(_SLOW)


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


@dataclass(frozen=True, slots=True)
class _Handle:
    """One open ``sqlite3`` connection (``check_same_thread=False``: the event loop's
    thread and worker threads take turns on it; only the holder of a
    :class:`SQLiteConnection` on it uses it, one statement at a time), its clock, and
    whether its ``COMMIT`` fsyncs."""

    raw: sqlite3.Connection
    clock: _Clock
    path: str
    fsync_commits: bool


class SQLiteConnection:
    """A :class:`~power_loop.store.port.Connection` over one ``sqlite3`` connection."""

    __slots__ = ("_busy_timeout", "_clock", "_fsync_commits", "_path", "_raw", "written")

    def __init__(self, handle: _Handle, busy_timeout: float) -> None:
        self._raw = handle.raw
        self._path = handle.path
        self._clock = handle.clock
        self._fsync_commits = handle.fsync_commits
        self._busy_timeout = busy_timeout
        self.written = 0
        """Bytes of text and blobs sent so far (how much the WAL grows, roughly)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        # The per-statement path of every send, inline: _weigh, _Clock.tick and _run's
        # first try, without a call or a closure each (about a third of the port's
        # cost per statement went there).
        size = 0
        for p in params:
            if isinstance(p, _SIZED):
                size += len(p)
        self.written += size
        if size < _LARGE and not sql.startswith(_SLOW):
            clock = self._clock
            now = time.time_ns() // 1000
            if now > clock.us:
                clock.us = now
            try:
                return self._raw.execute(sql, params).rowcount
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
            return await self._run(lambda: self._raw.execute(sql, params).rowcount, False,
                                   waited=True)
        return await self._run(lambda: self._raw.execute(sql, params).rowcount, True)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        size = sum(_weigh(sql, row)[0] for row in rows)
        self.written += size
        await self._run(lambda: self._raw.executemany(sql, rows), size >= _LARGE)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        size, away = _weigh(sql, params)
        self.written += size
        if away:
            return await self._run(lambda: self._raw.execute(sql, params).fetchall(), True)
        started = time.perf_counter()
        clock = self._clock
        now = time.time_ns() // 1000
        if now > clock.us:
            clock.us = now
        try:
            cursor = self._raw.execute(sql, params)
        except Exception as exc:
            if not _is_busy(exc):
                raise _failure(exc, self._path) from exc
            cursor = await self._run(lambda: self._raw.execute(sql, params), False,
                                     waited=True)
        try:
            # One call for the common result of one row (a write's RETURNING).
            rows: list[Row] = cursor.fetchmany(2)
        except Exception as exc:
            raise _failure(exc, self._path) from exc
        if len(rows) < 2:
            return rows
        return await self._rows(cursor, started + _INLINE_READ, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def commit(self) -> None:
        """``COMMIT``: on a worker thread when it fsyncs."""
        if not self._fsync_commits:  # inline, as execute's first try
            clock = self._clock
            now = time.time_ns() // 1000
            if now > clock.us:
                clock.us = now
            try:
                self._raw.execute("COMMIT")
                return
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
            await self._run(lambda: self._raw.execute("COMMIT"), False, waited=True)
            return
        await self._run(lambda: self._raw.execute("COMMIT"), True)

    async def _rows(self, cursor: sqlite3.Cursor, deadline: float,
                    rows: list[Row]) -> list[Row]:
        """The rest of the cursor's rows after ``rows``: here in growing chunks until
        ``deadline``, then the rest on a worker thread (a large result no longer holds
        the event loop while it is read and decoded; a single row is still read here
        whole)."""
        size = 2 * len(rows)
        try:
            while True:
                chunk = cursor.fetchmany(size)
                rows += chunk
                if len(chunk) < size:
                    return rows
                if time.perf_counter() >= deadline:
                    break
                size *= 2
            rows += await threaded(cursor.fetchall)
        except Exception as exc:
            raise _failure(exc, self._path) from exc
        return rows

    async def _run(self, run: Callable[[], _T], on_thread: bool, *,
                   waited: bool = False) -> _T:
        """``run()`` here (or on a worker thread when it may take long); while the
        database is busy, again after a pause, until the busy timeout runs out
        (``waited``: the caller already tried it once here, and found it busy)."""
        if not on_thread and not waited:
            self._clock.tick()
            try:
                return run()  # the common case: no lock to wait for, no await at all
            except Exception as exc:
                if not _is_busy(exc):
                    raise _failure(exc, self._path) from exc
            waited = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        budget = retry_deadline.get()  # the operation's, across the store's attempts
        if budget is not None:
            deadline = min(deadline, budget)
        pause = 0.001
        while True:
            if waited:
                await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
                pause = min(pause * 2, 0.05)
            self._clock.tick()
            try:
                return await threaded(run) if on_thread else run()
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

    def __init__(self, writer: _Handle, readers: list[_Handle], busy_timeout: float,
                 checkpointing: sqlite3.Connection | None) -> None:
        # The writer last: the last connection to close checkpoints and deletes the WAL.
        raws = [*(r.raw for r in readers), writer.raw]
        if checkpointing is not None:
            raws.insert(0, checkpointing)
        self._unclosed = watch(self, f"sqlite {writer.path!r}",
                               functools.partial(_close_all, raws))
        self._raws = raws
        self._writer = writer
        self._busy_timeout = busy_timeout
        self._write_lock = asyncio.Lock()
        self._checkpointer = None if checkpointing is None else Checkpointer(
            checkpointing, self._write_lock)
        self._all_readers = readers
        self._readers: asyncio.Queue[_Handle] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)

    @property
    def retry_budget(self) -> float:
        """Seconds one store operation may wait for the file's write lock, in all."""
        return self._busy_timeout

    def transaction(self, *, write: bool = True) -> _Transaction:
        if write or not self._all_readers:
            return _Transaction(self, self._writer, "BEGIN IMMEDIATE" if write else "BEGIN",
                                write, None)
        return _Transaction(self, None, "BEGIN", False, self._readers)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[SQLiteConnection]:
        async with self._write_lock:
            yield SQLiteConnection(self._writer, self._busy_timeout)

    async def close(self) -> None:
        self._unclosed.detach()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        async with self._write_lock:
            await asyncio.to_thread(_close_all, self._raws)  # may checkpoint: a thread


class _Transaction:
    """One transaction on the writer (under the write lock) or on a reader taken from the
    queue: ``BEGIN``, the body, ``COMMIT``; ``ROLLBACK`` when anything fails or the body
    is cancelled. A class rather than two nested generator context managers: this runs
    twice per send, and they cost more than its statements' own Python."""

    __slots__ = ("_begin", "_conn", "_db", "_handle", "_readers", "_write")

    def __init__(self, db: SQLiteDatabase, handle: _Handle | None, begin: str, write: bool,
                 readers: asyncio.Queue[_Handle] | None) -> None:
        self._db = db
        self._handle = handle
        self._begin = begin
        self._write = write
        self._readers = readers
        self._conn: SQLiteConnection | None = None

    async def __aenter__(self) -> SQLiteConnection:
        db, readers = self._db, self._readers
        if readers is None:
            await db._write_lock.acquire()
        else:
            self._handle = await readers.get()
        try:
            assert self._handle is not None
            conn = SQLiteConnection(self._handle, db._busy_timeout)
            # A transaction starts with a suspension point, as on the server engines (and
            # as when every statement went to a driver thread): a task cancelled meanwhile
            # stops here, before its transaction, rather than at its next await after it.
            await asyncio.sleep(0)
            try:
                await conn.execute(self._begin)
            except BaseException:
                conn.rollback()
                raise
        except BaseException:
            self._release()
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        conn = self._conn
        assert conn is not None
        try:
            if kind is not None:
                conn.rollback()  # on this thread, at once: nothing can come in between
                return
            try:
                await conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            self._release()
        checkpointer = self._db._checkpointer
        if self._write and checkpointer is not None:
            checkpointer.wrote(_PAGES_PER_COMMIT + conn.written // checkpoints.PAGE_BYTES)

    def _release(self) -> None:
        if self._readers is None:
            self._db._write_lock.release()
        else:
            assert self._handle is not None
            self._readers.put_nowait(self._handle)


def _close_all(raws: list[sqlite3.Connection]) -> None:
    """Close connections; also what releases a database nobody closed, then with no
    event loop (none may be left) and no thread to stop."""
    for raw in raws:
        try:
            raw.close()
        except sqlite3.Error:
            pass


def _connect(target: str, uri: str | bool, parsed: ParsedDSN, role: str) -> sqlite3.Connection:
    """Open and set up one connection (on a worker thread: it may wait for the disk or
    for a lock). ``role``: ``writer``, ``reader`` or ``checkpoints``."""
    options = parsed.options
    raw = sqlite3.connect(target, isolation_level=None, timeout=options.busy_timeout,
                          uri=bool(uri), check_same_thread=False)
    try:
        # The busy timeout (set by connect) makes a second process wait for the write
        # lock while the connection is set up; WAL lets readers work beside one writer;
        # synchronous=NORMAL is crash-safe in WAL mode (a power cut may lose the last
        # commits; use FULL). (Each PRAGMA's rows are read: a statement left half-read
        # blocks VACUUM.)
        if role == "writer":
            _patiently(raw, "PRAGMA journal_mode = WAL", options.busy_timeout)
            if not _is_memory(parsed.location):
                raw.execute(
                    f"PRAGMA wal_autocheckpoint = {checkpoints.FALLBACK_PAGES}").fetchall()
        raw.execute(f"PRAGMA synchronous = {options.synchronous.upper()}").fetchall()
        if role == "reader":
            raw.execute("PRAGMA query_only = 1").fetchall()
        # From now on a busy database is waited for without blocking (SQLiteConnection).
        raw.execute("PRAGMA busy_timeout = 0").fetchall()
    except BaseException:
        raw.close()
        raise
    return raw


def _patiently(raw: sqlite3.Connection, sql: str, budget: float) -> None:
    """Run ``sql`` (on a worker thread), again after a pause while the file is busy, for up
    to ``budget`` seconds. Switching to WAL needs an exclusive lock, and SQLite refuses it
    at once, without its busy handler, while another connection holds the write lock (it
    would deadlock otherwise): several processes opening a new file at once meet that."""
    deadline = time.monotonic() + budget
    pause = 0.001
    while True:
        try:
            raw.execute(sql).fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _discard(task: asyncio.Future[sqlite3.Connection]) -> None:
    """Close a connection opened after its opener gave up waiting."""
    if task.cancelled() or task.exception() is not None:
        return
    task.result().close()


async def _open_raw(path: str, parsed: ParsedDSN, role: str) -> sqlite3.Connection:
    target, uri = path, False
    if not parsed.options.create and not _is_memory(path):
        # mode=rw: opening must not create the file (schema policies VERIFY and NONE).
        target, uri = _no_create_uri(path), True
    task = asyncio.ensure_future(asyncio.to_thread(_connect, target, uri, parsed, role))
    try:
        return await asyncio.wait_for(asyncio.shield(task),
                                      timeout=parsed.options.connect_timeout)
    except BaseException as exc:
        task.add_done_callback(_discard)
        if isinstance(exc, Exception):
            raise _failure(exc, path) from exc
        raise


async def _open(path: str, parsed: ParsedDSN, *, reader: bool) -> _Handle:
    raw = await _open_raw(path, parsed, "reader" if reader else "writer")
    clock = _Clock()
    raw.create_function("pl_now_us", 0, clock)  # the dialect's now_us
    fsync = parsed.options.synchronous in _FSYNCING and not _is_memory(path)
    return _Handle(raw, clock, path, fsync_commits=fsync)


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
    checkpointing = None
    try:
        if not _is_memory(path):
            for _ in range(parsed.options.readers):
                readers.append(await _open(path, parsed, reader=True))
            checkpointing = await _open_raw(path, parsed, "checkpoints")
    except BaseException:
        await asyncio.to_thread(_close_all, [writer.raw, *(r.raw for r in readers)])
        raise
    return SQLiteDatabase(writer, readers, parsed.options.busy_timeout, checkpointing)
