"""WAL checkpoints on a thread of their own, never on the event loop.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses its threshold: on
the event loop, since statements run there, it copied the WAL back into the database
file and fsynced both (stalls of tens of milliseconds were measured). Here the writer
tells a :class:`Checkpointer` how much it wrote; past :data:`PAGES` pages the
checkpointer's daemon thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of
its own. A passive checkpoint takes no lock that readers or the writer wait for: it
copies what no open read snapshot still needs, and the next write transaction after a
complete one starts the WAL over from its beginning.

The writer keeps a fallback: ``wal_autocheckpoint`` at :data:`FALLBACK_PAGES`, far above
:data:`PAGES`, so a WAL that this thread does not keep small (it died, or a stream of
readers kept it from finishing) still stays bounded, at the price of a stall then.
Another process on the file checkpoints what it writes itself: power_loop's with its own
thread, others (the ``sqlite3`` shell...) with SQLite's default of 1,000 pages.
"""

from __future__ import annotations

import sqlite3
import threading

PAGES = 1000
"""Pages written (about 4 MB) after which the thread checkpoints: SQLite's own default."""

FALLBACK_PAGES = 16 * PAGES
"""The writer's own ``wal_autocheckpoint``: only reached when the thread falls behind."""

PAGE_BYTES = 4096
"""SQLite's default page size: how written bytes are counted in pages."""


class Checkpointer:
    """A daemon thread checkpointing one database file; it knows nothing of the
    database object, so a store nobody closed can still be collected."""

    __slots__ = ("_conn", "_pending", "_stopped", "_thread", "_wake", "runs")

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._pending = 0
        self._stopped = False
        self._wake = threading.Event()
        self.runs = 0
        """Checkpoints run so far (tests wait on it)."""
        # A daemon: a process that never closes its store must still exit.
        self._thread = threading.Thread(target=self._run, name=f"power_loop checkpoints {name}",
                                        daemon=True)
        self._thread.start()

    def wrote(self, pages: int) -> None:
        """Count pages a commit wrote; wake the thread past :data:`PAGES`. Called on the
        event loop after each write transaction: a few arithmetic operations."""
        self._pending += pages
        if self._pending >= PAGES:
            self._pending = 0
            self._wake.set()

    def _run(self) -> None:
        conn = self._conn
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # the next wake tries again; the fallback bounds the WAL
                self.runs += 1
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def stop(self) -> None:
        """Ask the thread to close its connection and end; returns at once."""
        self._stopped = True
        self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (after :meth:`stop`); blocks: run it on a thread."""
        self._thread.join(timeout)
