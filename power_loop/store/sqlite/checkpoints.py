"""WAL checkpoints on worker threads, never on the event loop.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses its threshold: on
the event loop, since statements run there, it copied the WAL back into the database
file and fsynced both (stalls of tens of milliseconds were measured). Here the writer
tells a :class:`Checkpointer` how much it wrote; past :data:`PAGES` pages it checkpoints,
on a connection of its own and on a worker thread, in two passes, both ``PASSIVE`` (they
take no lock anyone waits for, and copy what no open read snapshot still needs). The
first copies the bulk while the writer goes on. The second copies the few pages written
meanwhile while it holds the database's write lock, so no commit of this process lands
in between: the checkpoint is then complete, and the next write transaction starts the
WAL over from its beginning. Passive passes alone would never get there under steady
writes: a commit always lands before the checkpoint is complete, and the WAL grows on.
(A ``RESTART`` checkpoint would wait for the file's write lock with a busy handler, which
a writer that takes it back-to-back starves.)

The writer keeps a fallback: ``wal_autocheckpoint`` at :data:`FALLBACK_PAGES`, far above
:data:`PAGES`, so a WAL that the checkpointer does not keep small (another process
writing without one, a stream of readers keeping it from completing) stays bounded, at
the price of a stall then. Another power_loop process on the file checkpoints what it
writes itself; other programs (the ``sqlite3`` shell...) use SQLite's default, 1,000 pages.
"""

from __future__ import annotations

import asyncio
import sqlite3

from power_loop.store.sqlite.threads import threaded

PAGES = 1000
"""Pages written (about 4 MB) after which a checkpoint runs: SQLite's own default."""

FALLBACK_PAGES = 16 * PAGES
"""The writer's own ``wal_autocheckpoint``: only reached when checkpoints fall behind."""

PAGE_BYTES = 4096
"""SQLite's default page size: how written bytes are counted in pages."""


class Checkpointer:
    """Checkpoints of one database file, driven from the event loop, run on threads."""

    __slots__ = ("_closed", "_conn", "_pending", "_task", "_write_lock", "runs")

    def __init__(self, conn: sqlite3.Connection, write_lock: asyncio.Lock) -> None:
        self._conn = conn
        self._write_lock = write_lock
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.runs = 0
        """Checkpoints completed so far."""

    def wrote(self, pages: int) -> None:
        """Count pages a write transaction added; start a checkpoint past :data:`PAGES`
        (unless one is running). Called on the event loop after each commit, outside
        the write lock: a few arithmetic operations."""
        self._pending += pages
        if self._pending >= PAGES and self._task is None and not self._closed:
            self._pending = 0
            self._task = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            await threaded(self._pass)  # the bulk, beside the writer and the readers
            async with self._write_lock:
                await threaded(self._pass)  # what was written meanwhile; no writer now
            self.runs += 1
        finally:
            self._task = None

    def _pass(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # the next checkpoint tries again; the fallback bounds the WAL

    async def close(self) -> None:
        """Let a running checkpoint end (call without holding the write lock)."""
        self._closed = True
        task = self._task
        if task is not None:
            await asyncio.wait([task])

    @property
    def connection(self) -> sqlite3.Connection:
        """Its connection (closed with the database's others)."""
        return self._conn
