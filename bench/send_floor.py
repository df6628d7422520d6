"""The send floor: the rows of one agent send written directly against each driver.

A send writes what a ``StatefulAgentLoop.send`` writes, in the same transactions, with
the same statements (``power_loop/store/statements.py``; on PostgreSQL and MySQL
power_loop now folds each transaction into one round trip, the floor does not) on tables created by
power_loop's DDL, and message bodies copied from a send power_loop made (:class:`SendShape`):

    txn 1   UPDATE sessions SET lease_epoch = lease_epoch + 1, lease_owner = ?,
                lease_expires_at = <now> + ?, pending_send = send_count,
                send_count = send_count + 1, next_seq = next_seq + ?, updated_at = <now>
            WHERE id = ? AND (lease_owner IS NULL OR lease_expires_at < <now>)
                AND pending_send IS NULL  RETURNING lease_epoch, ..., next_seq, ...
            INSERT INTO sends ...            INSERT INTO messages ... (the user's)
    [one txn per mid-send append: the assistant's tool call, then the tool's result]
            UPDATE sessions SET next_seq = next_seq + ?, lease_expires_at = <now> + ?, ...
            WHERE id = ? AND lease_owner IS NOT NULL AND lease_epoch = ?  RETURNING next_seq
            INSERT INTO messages ...
    txn 2   UPDATE sessions SET pending_send = NULL, resume_attempts = 0,
                next_seq = next_seq + ?, lease_owner = NULL, lease_expires_at = NULL,
                updated_at = <now>
            WHERE id = ? AND pending_send = ? AND lease_owner IS NOT NULL
                AND lease_epoch = ?  RETURNING next_seq
            INSERT INTO messages ... (the answer)     UPDATE sends SET status = ... (the outcome)

MySQL has no ``UPDATE ... RETURNING``: each session update is followed by a ``SELECT`` of
the same columns, as power_loop does. Nothing but driver calls is timed: no model, no
tool, no encoding (the bodies are ready-made JSON text).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from bench.floor import (
    InlineSQLite,
    MySQLRaw,
    PostgresRaw,
    Raw,
    SQLiteRaw,
    open_raw,
    session_insert,
)

P = ParamSpec("P")
T = TypeVar("T")
TTL_US = 30_000_000
"""The lease, as power_loop's default ``lease_ttl`` (30 s), in microseconds."""
OWNER = "bench-host:4242:0123456789ab"
"""A lease owner as long as the ones power_loop makes (host:pid:random)."""


@dataclass(frozen=True, slots=True)
class SendShape:
    """The rows of one send, as power_loop wrote them (bodies as stored JSON text)."""

    user: str
    """The user message's body."""
    appends: tuple[tuple[str, str], ...]
    """(role, body) of each message appended mid-send, one transaction each."""
    answer: str
    """The final assistant message's body, written with the send's end."""
    stop_reason: str
    rounds: int
    usage: str
    """The send's token usage, as stored JSON text."""
    source: str = "user"


class SendFloor(Protocol):
    """Raw-driver sends into one prefix's tables."""

    server: str

    async def new_session(self) -> str:
        """Create an empty session (untimed) and return its id."""
        ...

    async def send(self, session_id: str, shape: SendShape) -> None:
        """Write the rows of one send shaped as ``shape``, in power_loop's transactions."""
        ...

    async def close(self) -> None:
        """Drop the tables and close the connections."""
        ...


class _SQL:
    """power_loop's statements for a send, in the driver's placeholder style."""

    def __init__(self, raw: Raw, returning: bool) -> None:
        s, m, sd = raw.table("sessions"), raw.table("messages"), raw.table("sends")
        now = raw.dialect.now_us
        mark = [raw.mark.format(n=n) for n in range(1, 8)]
        m1, m2, m3, m4, m5, m6, m7 = mark
        begin_columns = ("lease_epoch, lease_expires_at, send_count, next_seq, system_prompt, "
                         "incarnation, metadata")

        def tail(columns: str) -> str:
            return f" RETURNING {columns}" if returning else ""

        self.begin = (
            f"UPDATE {s} SET lease_epoch = lease_epoch + 1, lease_owner = {m1}, "
            f"lease_expires_at = {now} + {m2}, pending_send = send_count, "
            f"send_count = send_count + 1, next_seq = next_seq + {m3}, updated_at = {now} "
            f"WHERE id = {m4} AND (lease_owner IS NULL OR lease_expires_at < {now}) "
            f"AND pending_send IS NULL" + tail(begin_columns))
        self.insert_send = (
            f"INSERT INTO {sd} (session_id, send_index, status, source, request_key, "
            "first_seq, created_at, finished_at, stop_reason, rounds, token_usage, error) "
            f"VALUES ({m1}, {m2}, 'pending', {m3}, {m4}, {m5}, {now}, NULL, NULL, 0, '{{}}', "
            "NULL)")
        self.insert_message = (
            f"INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "
            f"VALUES ({m1}, {m2}, {m3}, {m4}, {m5}, {now})")
        self.append = (
            f"UPDATE {s} SET next_seq = next_seq + {m1}, lease_expires_at = {now} + {m2}, "
            f"updated_at = {now} WHERE id = {m3} AND lease_owner IS NOT NULL "
            f"AND lease_epoch = {m4}" + tail("next_seq"))
        self.finish = (
            f"UPDATE {s} SET pending_send = NULL, resume_attempts = 0, next_seq = next_seq + {m1}, "
            f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {now} "
            f"WHERE id = {m2} AND pending_send = {m3} AND lease_owner IS NOT NULL "
            f"AND lease_epoch = {m4}" + tail("next_seq"))
        self.end_send = (
            f"UPDATE {sd} SET status = {m1}, finished_at = {now}, stop_reason = {m2}, "
            f"rounds = {m3}, token_usage = {m4}, error = {m5} "
            f"WHERE session_id = {m6} AND send_index = {m7}")
        # MySQL: the columns RETURNING would give, read in the same transaction.
        self.select_begin = f"SELECT {begin_columns} FROM {s} WHERE id = {m1}"
        self.select_next_seq = f"SELECT next_seq FROM {s} WHERE id = {m1}"


def _matched(row: Any, what: str) -> Any:
    if row is None:
        raise RuntimeError(f"send floor: the {what} update matched no session row")
    return row


class _Base:
    def __init__(self, raw: Raw) -> None:
        self._raw = raw
        self._new_session = session_insert(raw)
        self.server = raw.server

    async def new_session(self) -> str:
        sid = f"floor-{uuid.uuid4().hex}"
        await self._raw.setup(self._new_session, [sid])
        return sid

    async def close(self) -> None:
        await self._raw.close()

    async def send(self, session_id: str, shape: SendShape) -> None:
        epoch, index, _ = await self._txn(self._open, session_id, shape)
        for role, body in shape.appends:
            await self._txn(self._append, session_id, epoch, index, role, body)
        await self._txn(self._finish, session_id, epoch, index, shape)

    # Each driver's transaction and the statements of each of the send's transactions.
    async def _txn(self, fn: Callable[P, Awaitable[T]], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        raise NotImplementedError

    async def _open(self, sid: str, shape: SendShape) -> tuple[int, int, int]:
        """Transaction 1: take the lease, open the send, store the user's message."""
        raise NotImplementedError

    async def _append(self, sid: str, epoch: int, index: int, role: str, body: str) -> None:
        """A mid-send append (the assistant's tool call, the tool's result)."""
        raise NotImplementedError

    async def _finish(self, sid: str, epoch: int, index: int, shape: SendShape) -> None:
        """The last transaction: store the answer, end the send, release the lease."""
        raise NotImplementedError


class SQLiteSendFloor(_Base):
    """Sends through one ``sqlite3`` connection run inline (as power_loop does), ``BEGIN
    IMMEDIATE`` under the writer lock."""

    def __init__(self, raw: SQLiteRaw) -> None:
        super().__init__(raw)
        self._conn, self._lock = raw.conn, raw.lock
        self._sql = _SQL(raw, returning=True)

    async def _txn(self, fn: Callable[P, Awaitable[T]], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        conn = self._conn
        async with self._lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                result = await fn(*args, **kwargs)
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            return result

    async def _row(self, sql: str, args: Sequence[Any], what: str) -> Any:
        return _matched(next(iter(await self._conn.execute_fetchall(sql, args)), None), what)

    async def _open(self, sid: str, shape: SendShape) -> tuple[int, int, int]:
        sql, conn = self._sql, self._conn
        row = await self._row(sql.begin, (OWNER, TTL_US, 1, sid), "begin")
        epoch, index, first = row[0], row[2] - 1, row[3] - 1
        await conn.execute(sql.insert_send, (sid, index, shape.source, None, first))
        await conn.execute(sql.insert_message, (sid, first, index, "user", shape.user))
        return epoch, index, first

    async def _append(self, sid: str, epoch: int, index: int, role: str, body: str) -> None:
        seq = (await self._row(self._sql.append, (1, TTL_US, sid, epoch), "append"))[0] - 1
        await self._conn.execute(self._sql.insert_message, (sid, seq, index, role, body))

    async def _finish(self, sid: str, epoch: int, index: int, shape: SendShape) -> None:
        sql, conn = self._sql, self._conn
        seq = (await self._row(sql.finish, (1, sid, index, epoch), "finish"))[0] - 1
        await conn.execute(sql.insert_message, (sid, seq, index, "assistant", shape.answer))
        await conn.execute(sql.end_send, ("done", shape.stop_reason, shape.rounds, shape.usage,
                                          None, sid, index))


class PostgresSendFloor(_Base):
    """Sends through one asyncpg connection of the pool (kept for the whole run)."""

    def __init__(self, raw: PostgresRaw) -> None:
        super().__init__(raw)
        self._conn = raw.conns[0]
        self._sql = _SQL(raw, returning=True)

    async def _txn(self, fn: Callable[P, Awaitable[T]], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        conn = self._conn
        await conn.execute("BEGIN")
        try:
            result = await fn(*args, **kwargs)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        return result

    async def _open(self, sid: str, shape: SendShape) -> tuple[int, int, int]:
        sql, conn = self._sql, self._conn
        row = _matched(await conn.fetchrow(sql.begin, OWNER, TTL_US, 1, sid), "begin")
        epoch, index, first = row[0], row[2] - 1, row[3] - 1
        await conn.execute(sql.insert_send, sid, index, shape.source, None, first)
        await conn.execute(sql.insert_message, sid, first, index, "user", shape.user)
        return epoch, index, first

    async def _append(self, sid: str, epoch: int, index: int, role: str, body: str) -> None:
        conn = self._conn
        seq = _matched(await conn.fetchval(self._sql.append, 1, TTL_US, sid, epoch), "append")
        await conn.execute(self._sql.insert_message, sid, seq - 1, index, role, body)

    async def _finish(self, sid: str, epoch: int, index: int, shape: SendShape) -> None:
        sql, conn = self._sql, self._conn
        seq = _matched(await conn.fetchval(sql.finish, 1, sid, index, epoch), "finish")
        await conn.execute(sql.insert_message, sid, seq - 1, index, "assistant", shape.answer)
        await conn.execute(sql.end_send, "done", shape.stop_reason, shape.rounds, shape.usage,
                           None, sid, index)


class MySQLSendFloor(_Base):
    """Sends through one aiomysql connection and cursor (kept for the whole run)."""

    def __init__(self, raw: MySQLRaw) -> None:
        super().__init__(raw)
        self._cursor = raw.cursors[0]
        self._sql = _SQL(raw, returning=False)

    async def _txn(self, fn: Callable[P, Awaitable[T]], *args: P.args,
                   **kwargs: P.kwargs) -> T:
        cursor = self._cursor
        await cursor.execute("BEGIN")
        try:
            result = await fn(*args, **kwargs)
            await cursor.execute("COMMIT")
        except BaseException:
            await cursor.execute("ROLLBACK")
            raise
        return result

    async def _update(self, sql: str, args: Sequence[Any], select: str, sid: str,
                      what: str) -> Any:
        cursor = self._cursor
        await cursor.execute(sql, args)
        if cursor.rowcount < 1:
            _matched(None, what)
        await cursor.execute(select, (sid,))
        return _matched(await cursor.fetchone(), what)

    async def _open(self, sid: str, shape: SendShape) -> tuple[int, int, int]:
        sql, cursor = self._sql, self._cursor
        row = await self._update(sql.begin, (OWNER, TTL_US, 1, sid), sql.select_begin, sid,
                                 "begin")
        epoch, index, first = row[0], row[2] - 1, row[3] - 1
        await cursor.execute(sql.insert_send, (sid, index, shape.source, None, first))
        await cursor.execute(sql.insert_message, (sid, first, index, "user", shape.user))
        return epoch, index, first

    async def _append(self, sid: str, epoch: int, index: int, role: str, body: str) -> None:
        sql = self._sql
        row = await self._update(sql.append, (1, TTL_US, sid, epoch), sql.select_next_seq, sid,
                                 "append")
        await self._cursor.execute(sql.insert_message, (sid, row[0] - 1, index, role, body))

    async def _finish(self, sid: str, epoch: int, index: int, shape: SendShape) -> None:
        sql, cursor = self._sql, self._cursor
        row = await self._update(sql.finish, (1, sid, index, epoch), sql.select_next_seq, sid,
                                 "finish")
        await cursor.execute(sql.insert_message,
                             (sid, row[0] - 1, index, "assistant", shape.answer))
        await cursor.execute(sql.end_send, ("done", shape.stop_reason, shape.rounds,
                                            shape.usage, None, sid, index))


class CommitFloor:
    """The physical limit of the durable contract: one one-statement commit per durable
    write of a send (the user's message before the model call, each mid-send message,
    the answer), each a lone ``INSERT`` of the message's row in autocommit, with its seq
    counted here. No lease, no send row, no session update: nothing power_loop could
    leave out and still keep its promises is left in.

    ``slot`` picks the connection: slot ``i`` uses connection ``i`` modulo the pool's
    size, one commit at a time on each (SQLite: its one connection).
    """

    def __init__(self, raw: Raw) -> None:
        self._raw, self.server = raw, raw.server
        self._new_session = session_insert(raw)
        marks = ", ".join(raw.mark.format(n=n) for n in range(1, 6))
        self._insert = (f"INSERT INTO {raw.table('messages')} (session_id, seq, send_index, "
                        f"role, body, created_at) VALUES ({marks}, {raw.dialect.now_us})")
        self._next: dict[str, tuple[int, int]] = {}  # session -> (next seq, next send)
        self._sqlite: InlineSQLite | None = None
        if isinstance(raw, SQLiteRaw):
            self._sqlite, self._locks = raw.conn, [raw.lock]
        else:
            assert isinstance(raw, PostgresRaw | MySQLRaw)
            self._locks = [asyncio.Lock() for _ in range(len(raw.conns))]

    def keep_tables(self) -> None:
        """Leave the tables in place when closing (another process owns them)."""
        assert isinstance(self._raw, SQLiteRaw | PostgresRaw | MySQLRaw)
        self._raw.drops = []

    async def new_session(self) -> str:
        sid = f"commits-{uuid.uuid4().hex}"
        await self._raw.setup(self._new_session, [sid])
        self._next[sid] = (0, 0)
        return sid

    async def send(self, session_id: str, shape: SendShape, slot: int = 0) -> None:
        seq, index = self._next[session_id]
        rows = [("user", shape.user), *shape.appends, ("assistant", shape.answer)]
        for role, body in rows:
            await self._commit(slot, (session_id, seq, index, role, body))
            seq += 1
        self._next[session_id] = (seq, index + 1)

    async def _commit(self, slot: int, args: tuple[Any, ...]) -> None:
        raw, lock = self._raw, self._locks[slot % len(self._locks)]
        async with lock:
            if self._sqlite is not None:
                await self._sqlite.execute(self._insert, args)
            elif isinstance(raw, PostgresRaw):
                await raw.conns[slot % len(raw.conns)].execute(self._insert, *args)
            else:
                assert isinstance(raw, MySQLRaw)
                await raw.cursors[slot % len(raw.cursors)].execute(self._insert, args)

    async def close(self) -> None:
        await self._raw.close()


async def open_commit_floor(backend: str, location: str, prefix: str,
                            size: int = 1) -> CommitFloor:
    """A commit floor for ``backend`` with ``size`` connections (SQLite: one)."""
    return CommitFloor(await open_raw(backend, location, prefix, size=size))


async def open_send_floor(backend: str, location: str, prefix: str) -> SendFloor:
    """A send floor for ``backend``: ``location`` is a file path (SQLite) or a DSN."""
    raw = await open_raw(backend, location, prefix, size=1)
    if isinstance(raw, SQLiteRaw):
        return SQLiteSendFloor(raw)
    if isinstance(raw, PostgresRaw):
        return PostgresSendFloor(raw)
    assert isinstance(raw, MySQLRaw)
    return MySQLSendFloor(raw)
