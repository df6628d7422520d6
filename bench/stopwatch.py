"""Where a send's time goes: the Store and its ``Database`` port, timed from outside.

:class:`TimedStore` is a :class:`~power_loop.store.Store` whose public coroutine methods
(``write``/``read`` included: the loop runs transaction bodies of its own through them)
add their wall time to a :class:`Stopwatch`; a call made from inside another store call
is not counted twice.
Below it, :class:`TimedDatabase` wraps the store's ``Database`` port and adds the time
spent in the port: taking a connection, ``BEGIN``, each statement, ``COMMIT``. So:

* ``store`` is everything the store does for the loop (argument checks, transaction
  bodies, row decoding, the port calls), in wall time and in this process's CPU time
  (``store_cpu``: SQLite's own work included, as it runs in a thread of this process;
  a database server's not), which a busy machine disturbs far less;
* ``port`` is the part of it spent in the driver adapter, the driver and the database;
* the send's total minus ``store`` is the loop's own work (model and tool included).

The wrappers cost a few microseconds per call: a measured send is a little slower than
an unmeasured one, which is why throughput is measured without them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from power_loop.store import Connection, Database, Dialect, Store
from power_loop.store.port import Row

T = TypeVar("T")
_INSIDE: ContextVar[bool] = ContextVar("bench_inside_store", default=False)


@dataclass
class Stopwatch:
    """Wall seconds accumulated since the last :meth:`reset`."""

    store: float = 0.0
    store_cpu: float = 0.0
    """This process's CPU seconds during store calls (driver threads included)."""
    port: float = 0.0
    calls: int = 0
    """Outermost store calls."""

    def reset(self) -> None:
        self.store = self.store_cpu = self.port = 0.0
        self.calls = 0


class TimedConnection:
    """A ``Connection`` adding each statement's wall time to ``watch.port``."""

    __slots__ = ("_conn", "_watch")

    def __init__(self, conn: Connection, watch: Stopwatch) -> None:
        self._conn, self._watch = conn, watch

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        start = time.perf_counter()
        try:
            return await self._conn.execute(sql, params)
        finally:
            self._watch.port += time.perf_counter() - start

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        start = time.perf_counter()
        try:
            await self._conn.executemany(sql, rows)
        finally:
            self._watch.port += time.perf_counter() - start

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        start = time.perf_counter()
        try:
            return await self._conn.fetch(sql, params)
        finally:
            self._watch.port += time.perf_counter() - start

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        start = time.perf_counter()
        try:
            return await self._conn.fetchone(sql, params)
        finally:
            self._watch.port += time.perf_counter() - start


class TimedDatabase:
    """A ``Database`` adding the time spent in the port to ``watch.port``."""

    def __init__(self, inner: Database, watch: Stopwatch) -> None:
        self._inner, self._watch = inner, watch
        self.dialect: Dialect = inner.dialect

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Connection]:
        watch = self._watch
        start = time.perf_counter()
        try:
            async with self._inner.transaction(write=write) as conn:
                # Taking the connection (lock or pool) and BEGIN.
                watch.port += time.perf_counter() - start
                try:
                    yield TimedConnection(conn, watch)
                finally:
                    start = time.perf_counter()
        finally:
            # COMMIT (or ROLLBACK) and giving the connection back.
            watch.port += time.perf_counter() - start

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        # The send path's one-statement writes (PostgreSQL, MySQL) run here.
        watch = self._watch
        start = time.perf_counter()
        try:
            async with self._inner.autocommit() as conn:
                watch.port += time.perf_counter() - start
                try:
                    yield TimedConnection(conn, watch)
                finally:
                    start = time.perf_counter()
        finally:
            watch.port += time.perf_counter() - start

    async def close(self) -> None:
        await self._inner.close()


TRANSACTIONS = ("_write", "_read")
"""The Store's internal transaction runners, which the loop calls directly."""


class TimedStore(Store):
    """A Store over ``database`` that times its calls into ``watch``.

    Every public coroutine method is timed, and the internal ``_write`` and ``_read``
    too (the loop runs its own transaction bodies through them), so methods added later
    are covered. Shares ``database`` with whoever opened it (closing this store closes it).
    """

    def __init__(self, database: Database, table_prefix: str, watch: Stopwatch) -> None:
        super().__init__(TimedDatabase(database, watch), table_prefix)
        self.watch = watch
        for name in dir(Store):
            if (not name.startswith("_") or name in TRANSACTIONS) \
                    and inspect.iscoroutinefunction(getattr(Store, name)):
                setattr(self, name, self._timed(getattr(self, name)))

    def _timed(self, method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        watch = self.watch

        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> T:
            if _INSIDE.get():
                return await method(*args, **kwargs)
            token = _INSIDE.set(True)
            cpu, start = time.process_time(), time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                watch.store += time.perf_counter() - start
                watch.store_cpu += time.process_time() - cpu
                watch.calls += 1
                _INSIDE.reset(token)

        return timed
