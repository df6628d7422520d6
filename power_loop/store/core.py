"""The store's machinery: transactions with retries, and the fenced session-row update.

Every public store method opens a transaction through :meth:`StoreCore.write` or
:meth:`StoreCore.read` (retried on transient failures: deadlocks, serialization
failures, a busy SQLite file) and calls its ``_txn`` twin, which takes the connection,
so operations compose inside one transaction.

Everything that changes a session goes through one ``UPDATE`` of its row: it hands out
seqs and send indexes (so they stay contiguous under any number of writers), locks the
row for the rest of the transaction, and, when the caller presents a lease epoch, is the
fencing check: a stale epoch matches no row, and nothing is written.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from power_loop.errors import (
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SessionNotFoundError,
    TransientStoreError,
)
from power_loop.store.fused import fused_writes, message_body
from power_loop.store.port import Connection, Database, Row
from power_loop.store.records import MAX_TTL, NewMessage, check_count, check_name, dump_json
from power_loop.store.schema import TableNames
from power_loop.store.statements import SessionUpdate, Statements
from power_loop.store.window_cache import WindowCache

P = ParamSpec("P")
T = TypeVar("T")


def ttl_us(ttl: float) -> int:
    """A lease duration in seconds as database-clock microseconds (checked)."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL:
        raise InvalidArgumentError(
            f"lease ttl must be a number of seconds above 0 and at most {MAX_TTL:.0f} "
            f"(a year), not {ttl!r}")
    return int(ttl * 1_000_000)


def not_found(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(f"session {session_id!r} does not exist", session_id=session_id)


async def _rollback_quietly(conn: Connection) -> None:
    """End the transaction a failed multi-statement text left open, if it can."""
    try:
        await conn.execute("ROLLBACK")
    except PowerLoopError:
        pass  # the connection is broken: the server rolls back as it drops it


class StoreCore:
    """Connections, statements and transactions shared by all store operations."""

    def __init__(self, db: Database, table_prefix: str, *, retries: int = 8) -> None:
        self._db = db
        self._names = TableNames(db.dialect, table_prefix)
        self._sql = Statements(db, self._names)
        self._fused = fused_writes(self._sql, db.dialect, self._names)
        """The send path's writes as one statement each, where the engine allows it."""
        self._retries = retries
        self._cache: WindowCache[Any] = WindowCache()

    @property
    def window_cache(self) -> WindowCache[Any]:
        """The sessions' rendered windows, shared by every loop over this store (see
        :mod:`power_loop.store.window_cache`; ``.stats()`` has its hit and miss counts)."""
        return self._cache

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self._db.dialect.name

    @property
    def table_prefix(self) -> str:
        return self._names.prefix

    @property
    def database(self) -> Database:
        """The underlying port, for tools built on the store (export, workers)."""
        return self._db

    async def aclose(self) -> None:
        """Close the connections; transactions in flight finish first."""
        await self._db.close()

    async def write(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a write transaction, retried on transient failures.

        ``fn`` must be safe to run again from the start (it only talks to ``conn``).
        """
        return await self._run(True, fn, *args, **kwargs)

    async def read(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read-only transaction over one snapshot."""
        return await self._run(False, fn, *args, **kwargs)

    async def _run(self, write: bool, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(self._retries):
            try:
                async with self._db.transaction(write=write) as conn:
                    return await fn(conn, *args, **kwargs)
            except TransientStoreError:
                if attempt == self._retries - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def write_one(self, sql: str, args: Sequence[Any]) -> Row | None:
        """Run one statement on its own (its own transaction: one round trip), retried on
        transient failures as :meth:`write` is; return its first row."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # A cancellation requested before the write stops it before anything is
            # sent: once the one round trip is under way, whether it committed is unknown
            # until it answers (a transaction of several statements stops at its first).
            await asyncio.sleep(0)
        for attempt in range(self._retries):
            try:
                async with self._db.autocommit() as conn:
                    try:
                        return await conn.fetchone(sql, args)
                    except BaseException:
                        if self._fused is not None and self._fused.rollback_on_error:
                            await _rollback_quietly(conn)
                        raise
            except TransientStoreError:
                if attempt == self._retries - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _update_session(self, conn: Connection, stmt: SessionUpdate, session_id: str,
                              assign: Sequence[Any], where: Sequence[Any] = (),
                              *, epoch: int | None = None,
                              refused: Callable[[Row], PowerLoopError] | None = None) -> Row:
        """Run a session-row update; return its ``RETURNING`` row or raise why not.

        ``refused`` turns the row's state (epoch, pending send, lease owner, lease time
        left in microseconds) into the error to raise when the session exists and the
        epoch is current but the update's own condition did not hold.
        """
        args = [*assign, session_id, *where]
        sql = stmt.plain
        if epoch is not None:
            args.append(epoch)
            sql = stmt.fenced
        if self._sql.returning:
            row = await conn.fetchone(sql, args)
        else:
            row = await conn.fetchone(stmt.select, [session_id]) if await conn.execute(
                sql, args) else None
        if row is not None:
            return row
        raise await self._why_missed(conn, session_id, epoch, refused, sql)

    async def _why_missed(self, conn: Connection, session_id: str, epoch: int | None,
                          refused: Callable[[Row], PowerLoopError] | None,
                          sql: str) -> Exception:
        """Why a session-row update (``sql``) matched no row, from the row's state: the
        error to raise."""
        state = await conn.fetchone(self._sql.session_state, [session_id])
        if state is None:
            return not_found(session_id)
        if epoch is not None and int(state[0]) != epoch:
            return LeaseLostError(
                f"session {session_id!r} was taken over (lease epoch {int(state[0])}, "
                f"this writer holds {epoch}); nothing was written",
                session_id=session_id, epoch=epoch)
        if epoch is not None and state[2] is None:
            return LeaseLostError(
                f"the lease on session {session_id!r} (epoch {epoch}) was released; "
                "nothing was written", session_id=session_id, epoch=epoch)
        if refused is not None:
            return refused(state)
        return AssertionError(f"session update matched no row: {sql}")

    async def _require_session(self, conn: Connection, session_id: str) -> None:
        if await conn.fetchone(self._sql.next_seq, [session_id]) is None:
            raise not_found(session_id)

    async def _rows_of_session(self, conn: Connection, sql: str,
                               args: Sequence[Any]) -> list[Row]:
        """A query's rows; when there are none, raise if the session does not exist."""
        rows = await conn.fetch(sql, args)
        if not rows:
            await self._require_session(conn, args[0])
        return rows

    async def _insert_messages(self, conn: Connection, session_id: str, first_seq: int,
                               messages: Sequence[NewMessage],
                               send_index: int | None = None) -> None:
        """Insert messages at ``first_seq`` onwards (``send_index`` overrides theirs)."""
        rows = [(session_id, first_seq + i,
                 check_count(msg.send_index if send_index is None else send_index,
                             "send_index"),
                 check_name(msg.role, "role"), dump_json(message_body(msg)))
                for i, msg in enumerate(messages)]
        if len(rows) == 1:
            await conn.execute(self._sql.insert_message, rows[0])
        elif rows:
            await conn.executemany(self._sql.insert_message, rows)
