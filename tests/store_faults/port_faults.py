"""Faults injected at the store's port: a real :class:`Database` whose connections fail
at chosen points, the way a network or a server fails them.

Every statement still runs on the real engine; a fault only decides when the answer is
lost. The injected error is what a driver raises when its socket breaks (a
:class:`ConnectionLostError` from ``ConnectionResetError``), so each dialect sorts it as
it sorts a real broken connection.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from power_loop.errors import ConnectionLostError
from power_loop.store.port import Connection, Database, Dialect, Row


class Fault(enum.Enum):
    """Where one write attempt fails."""

    BEGIN = "begin"
    """Before the transaction starts: checking out the connection or ``BEGIN`` fails."""
    COMMIT_LOST = "commit_lost"
    """``COMMIT`` (a one-statement write, its own commit) fails before it lands."""
    COMMIT_LANDED = "commit_landed"
    """``COMMIT`` lands, then its answer is lost."""


def _broken(where: str) -> ConnectionLostError:
    try:
        raise ConnectionResetError(f"injected: the connection broke {where}")
    except ConnectionResetError as exc:
        error = ConnectionLostError(f"injected: connection lost {where}", backend="test")
        error.__cause__ = exc
        return error


class FaultyDatabase:
    """A real database whose next write attempts fail as ``plan`` says (``None``: the
    attempt goes through). Reads fail only with :attr:`Fault.BEGIN`, when ``reads``."""

    def __init__(self, inner: Database, plan: Sequence[Fault | None] = (),
                 *, reads: Sequence[Fault | None] = ()) -> None:
        self._inner = inner
        self.plan = list(plan)
        self.reads = list(reads)
        self.injected: list[Fault] = []
        self.attempts = 0
        """Write attempts made (transactions and one-statement writes)."""

    @property
    def dialect(self) -> Dialect:
        return self._inner.dialect

    @property
    def retry_budget(self) -> float | None:
        return getattr(self._inner, "retry_budget", None)

    def _next(self, write: bool) -> Fault | None:
        self.attempts += write
        queue = self.plan if write else self.reads
        fault = queue.pop(0) if queue else None
        if fault is not None:
            self.injected.append(fault)
        return fault

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[Connection]:
        fault = self._next(write)
        if fault is Fault.BEGIN:
            raise _broken("at BEGIN")
        async with self._inner.transaction(write=write) as conn:
            yield conn
            if fault is Fault.COMMIT_LOST:
                raise _broken("before COMMIT landed")  # the real transaction rolls back
        if fault is Fault.COMMIT_LANDED:
            raise _broken("after COMMIT landed")

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Connection]:
        fault = self._next(True)
        if fault is Fault.BEGIN:
            raise _broken("checking out a connection")
        async with self._inner.autocommit() as conn:
            yield _OneStatement(conn, fault)

    async def close(self) -> None:
        await self._inner.close()


class _OneStatement:
    """An autocommit connection whose statement (its own commit) meets ``fault``."""

    def __init__(self, conn: Connection, fault: Fault | None) -> None:
        self._conn = conn
        self._fault = fault

    async def _check(self) -> None:
        if self._fault is Fault.COMMIT_LOST:
            self._fault = None
            raise _broken("before the statement landed")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        await self._check()
        count = await self._conn.execute(sql, params)
        self._landed()
        return count

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._check()
        await self._conn.executemany(sql, rows)
        self._landed()

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self._check()
        rows = await self._conn.fetch(sql, params)
        self._landed()
        return rows

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        await self._check()
        row = await self._conn.fetchone(sql, params)
        self._landed()
        return row

    def _landed(self) -> None:
        if self._fault is Fault.COMMIT_LANDED:
            self._fault = None
            raise _broken("after the statement landed")
