"""A pool of asyncpg connections that costs nothing to give a clean connection back.

asyncpg's own pool gives a connection back in a task of its own (``asyncio.shield``
around its reset), and hands one out through a proxy object, a future and timers: about
55 us of CPU per acquire and release here, where one statement's round trip costs about
85. Every transaction of a send pays it. This pool keeps idle connections on a stack:
taking one is a ``pop``; giving back one whose transaction ended (``COMMIT`` or
``ROLLBACK`` ran) is a ``push``, with no suspension point, so a cancellation cannot cut
it off. A connection given back after anything went wrong (a cancelled statement, a
failed ``ROLLBACK``) is rolled back first: asyncpg waits out a cancelled statement
before the next one, so the ``ROLLBACK`` runs after it, and the connection never comes
back inside a transaction. A connection that cannot be rolled back is terminated, and a
new one is opened when next needed.

What it leaves out of asyncpg's pool: recycling connections after ``max_queries`` and
closing idle ones after a while (power_loop holds at most ``pool_max_size`` open; a
connection the server closed is noticed when taken, and replaced).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import asyncpg


class LightPool:
    """At most ``max_size`` asyncpg connections, ``min_size`` of them opened at once."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]],
                 max_size: int, close_timeout: float | None) -> None:
        self._connect = connect
        self._max = max_size
        self._close_timeout = close_timeout
        self._idle: list[asyncpg.Connection] = []
        self._all: set[asyncpg.Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._closing = False
        self._returned: asyncio.Event | None = None

    async def fill(self, count: int) -> None:
        """Open ``count`` connections now (a wrong DSN or password fails here)."""
        conns = await asyncio.gather(*(self._open() for _ in range(count)),
                                     return_exceptions=True)
        failed = [c for c in conns if isinstance(c, BaseException)]
        for conn in conns:
            if isinstance(conn, asyncpg.Connection):
                self._idle.append(conn)
        if failed:
            raise failed[0]

    async def _open(self) -> asyncpg.Connection:
        self._opening += 1
        try:
            conn = await self._connect()
        finally:
            self._opening -= 1
        self._all.add(conn)
        return conn

    def take_idle(self) -> asyncpg.Connection | None:
        """An idle connection at once (no await, no timer), or ``None``."""
        idle = self._idle
        while idle and not self._closing:
            conn = idle.pop()
            if not conn.is_closed():
                return conn
            self._all.discard(conn)
        return None

    async def acquire(self) -> asyncpg.Connection:
        """A connection outside any transaction: an idle one, a new one while fewer
        than ``max_size`` are open, else the next one given back."""
        while True:
            if self._closing:
                raise asyncpg.InterfaceError("pool is closing")
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.is_closed():
                    return conn
                self._all.discard(conn)
            if len(self._all) + self._opening < self._max:
                try:
                    return await self._open()
                except BaseException:
                    self._wake()  # another waiter may open one in its place
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self._put(handed)  # handed over as this task was cancelled
                    else:
                        self._wake()
                raise
            if conn is not None:
                return conn

    def release(self, conn: asyncpg.Connection) -> None:
        """Give back a connection known to be outside any transaction (no await)."""
        if conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
            return
        self._put(conn)

    async def release_unclean(self, conn: asyncpg.Connection) -> None:
        """Give back a connection after something went wrong on it: rolled back first
        (asyncpg waits out a cancelled statement first), terminated if that fails."""
        try:
            if not conn.is_closed():
                await conn.execute("ROLLBACK")
        except BaseException:
            conn.terminate()
            self._drop(conn)
            raise
        self.release(conn)

    def _put(self, conn: asyncpg.Connection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)
        self._check_returned()

    def _drop(self, conn: asyncpg.Connection) -> None:
        """Forget a connection (closed, or not to be reused): terminate it."""
        if not conn.is_closed():
            conn.terminate()
        self._all.discard(conn)
        self._wake()
        self._check_returned()

    def _wake(self) -> None:
        """Let one waiter open a connection of its own (one fewer is open)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _check_returned(self) -> None:
        if self._returned is not None and len(self._idle) >= len(self._all):
            self._returned.set()

    async def close(self) -> None:
        """Wait until every connection is given back, then close them all."""
        self._closing = True
        self._wake_all()
        if len(self._idle) < len(self._all):
            self._returned = asyncio.Event()
            self._check_returned()
            await self._returned.wait()
        idle, self._idle = self._idle, []
        self._all.clear()
        results = await asyncio.gather(*(c.close(timeout=self._close_timeout) for c in idle),
                                       return_exceptions=True)
        if any(isinstance(r, Exception) for r in results):
            for conn in idle:
                conn.terminate()
            raise next(r for r in results if isinstance(r, Exception))

    def _wake_all(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def terminate(self) -> None:
        """Cut every connection at once (no await: also at interpreter exit)."""
        self._closing = True
        self._wake_all()
        for conn in [*self._all, *self._idle]:
            conn.terminate()
        self._all.clear()
        self._idle.clear()
