"""The store: sessions, messages, sends and leases over any :class:`Database`.

Written once for every engine. Each public method opens a transaction (retried on
transient failures: deadlocks, serialization failures, a busy SQLite file) and calls its
``_txn`` twin, which takes the connection, so operations compose inside one transaction.

Everything that changes a session goes through one ``UPDATE`` of its row: it hands out
seqs and send indexes (so they stay contiguous under any number of writers), locks the
row for the rest of the transaction, and, when the caller presents a lease epoch, is the
fencing check: a stale epoch matches no row, and nothing is written.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from power_loop.errors import (
    IntegrityConflictError,
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SendPendingError,
    SessionBusyError,
    SessionExistsError,
    SessionNotFoundError,
    TransientStoreError,
)
from power_loop.store.dsn import connect
from power_loop.store.migrations import SchemaPolicy, ensure_schema, session_tables
from power_loop.store.port import Connection, Database, Row
from power_loop.store.records import (
    Lease,
    MessageRecord,
    NewMessage,
    SendRecord,
    SessionRecord,
    check_id,
    check_name,
    dump_json,
    from_us,
    load_json,
    to_us,
)
from power_loop.store.schema import TableNames, validate_prefix

P = ParamSpec("P")
T = TypeVar("T")

_SESSION_COLUMNS = ("id, parent_id, created_at, updated_at, system_prompt, metadata, "
                    "next_seq, send_count, pending_send, lease_owner, lease_epoch, "
                    "lease_expires_at")
_MESSAGE_COLUMNS = "seq, send_index, role, body, created_at"
_SEND_COLUMNS = ("session_id, send_index, status, source, request_key, first_seq, created_at, "
                 "finished_at, stop_reason, rounds, token_usage, error")
SEND_STATUSES = frozenset({"running", "done", "failed", "cancelled", "aborted"})


@dataclass(frozen=True, slots=True)
class _SessionUpdate:
    """An ``UPDATE`` of one session row, in its fenced and unfenced forms.

    ``returning`` columns come back through ``RETURNING`` where the engine has it, else
    through a ``SELECT`` in the same transaction (the row is already locked by then).
    """

    plain: str
    fenced: str
    select: str


class _Statements:
    """Every statement the store runs, rendered once for its dialect and prefix."""

    def __init__(self, db: Database, names: TableNames) -> None:
        d = db.dialect
        r = d.render
        s, m, sd = names.sessions, names.messages, names.sends
        self.returning = d.supports_update_returning

        def update(assign: str, where: str, returning: str) -> _SessionUpdate:
            base = f"UPDATE {s} SET {assign}, updated_at = {{now}} WHERE id = ?{where}"
            tail = f" RETURNING {returning}" if self.returning else ""
            return _SessionUpdate(
                plain=r(base + tail),
                fenced=r(base + " AND lease_epoch = ?" + tail),
                select=r(f"SELECT {returning} FROM {s} WHERE id = ?"),
            )

        self.insert_session = r(
            f"INSERT INTO {s} ({_SESSION_COLUMNS}) "
            "VALUES (?, ?, {now}, {now}, ?, ?, 0, 0, NULL, NULL, 0, NULL)")
        self.get_session = r(f"SELECT {_SESSION_COLUMNS} FROM {s} WHERE id = ?")
        self.list_sessions = r(
            f"SELECT {_SESSION_COLUMNS} FROM {s} ORDER BY created_at DESC, id DESC LIMIT ?")
        self.list_sessions_before = r(
            f"SELECT {_SESSION_COLUMNS} FROM {s} WHERE created_at < ? "
            "OR (created_at = ? AND id < ?) ORDER BY created_at DESC, id DESC LIMIT ?")
        self.session_state = r(
            f"SELECT lease_epoch, pending_send, lease_owner, lease_expires_at - {{now}} "
            f"FROM {s} WHERE id = ?")
        self.next_seq = r(f"SELECT next_seq FROM {s} WHERE id = ?")
        self.delete = [
            r(f"DELETE FROM {d.quote(names.raw(t))} WHERE {t.session_column} = ?")
            for t in reversed(session_tables())
        ]
        self.append = update("next_seq = next_seq + ?", "", "next_seq")
        self.insert_message = r(
            f"INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, {now})")
        self.read_messages = r(
            f"SELECT {_MESSAGE_COLUMNS} FROM {m} WHERE session_id = ? AND seq >= ? "
            "ORDER BY seq")
        self.read_messages_limit = r(
            f"SELECT {_MESSAGE_COLUMNS} FROM {m} WHERE session_id = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?")
        # MySQL evaluates SET assignments left to right, each seeing the ones before;
        # every assignment below reads only columns not yet assigned, so the result is
        # the same as on engines that read the old row throughout.
        self.acquire = update(
            "lease_epoch = CASE WHEN lease_owner = ? THEN lease_epoch ELSE lease_epoch + 1 END, "
            "lease_owner = ?, lease_expires_at = {now} + ?",
            " AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < {now})",
            "lease_epoch, lease_expires_at")
        self.renew = update("lease_expires_at = {now} + ?", " AND lease_owner = ?",
                            "lease_expires_at")
        self.release = r(
            f"UPDATE {s} SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = ? AND lease_owner = ? AND lease_epoch = ?")
        self.start_send = update(
            "pending_send = send_count, send_count = send_count + 1, next_seq = next_seq + ?",
            " AND pending_send IS NULL", "send_count, next_seq")
        self.finish_send = update(
            "pending_send = NULL, next_seq = next_seq + ?", " AND pending_send = ?", "next_seq")
        self.insert_send = r(
            f"INSERT INTO {sd} ({_SEND_COLUMNS}) "
            "VALUES (?, ?, 'running', ?, ?, ?, {now}, NULL, NULL, 0, '{}', NULL)")
        self.end_send = r(
            f"UPDATE {sd} SET status = ?, finished_at = {{now}}, stop_reason = ?, rounds = ?, "
            "token_usage = ?, error = ? WHERE session_id = ? AND send_index = ?")
        self.get_send = r(
            f"SELECT {_SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND send_index = ?")
        self.send_by_key = r(
            f"SELECT {_SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND request_key = ?")
        self.list_sends = r(
            f"SELECT {_SEND_COLUMNS} FROM {sd} WHERE session_id = ? AND send_index >= ? "
            "ORDER BY send_index")
        self.prune_candidates = r(
            f"SELECT id FROM {s} WHERE updated_at < ? "
            "AND (lease_owner IS NULL OR lease_expires_at < {now}) "
            "ORDER BY updated_at LIMIT ?" + d.for_update(skip_locked=d.supports_skip_locked))


def _session(row: Row) -> SessionRecord:
    return SessionRecord(
        id=row[0], parent_id=row[1], created_at=from_us(row[2]), updated_at=from_us(row[3]),
        system_prompt=load_json(row[4]), metadata=load_json(row[5]), next_seq=int(row[6]),
        send_count=int(row[7]), pending_send=None if row[8] is None else int(row[8]),
        lease_owner=row[9], lease_epoch=int(row[10]),
        lease_expires_at=None if row[11] is None else from_us(row[11]))


def _message(session_id: str, row: Row) -> MessageRecord:
    return MessageRecord(session_id=session_id, seq=int(row[0]), send_index=int(row[1]),
                         role=row[2], body=load_json(row[3]), created_at=from_us(row[4]))


def _send(row: Row) -> SendRecord:
    return SendRecord(
        session_id=row[0], send_index=int(row[1]), status=row[2], source=row[3],
        request_key=row[4], first_seq=int(row[5]), created_at=from_us(row[6]),
        finished_at=None if row[7] is None else from_us(row[7]), stop_reason=row[8],
        rounds=int(row[9]), usage=load_json(row[10]),
        error=None if row[11] is None else load_json(row[11]))


def _ttl_us(ttl: float) -> int:
    if not ttl > 0:
        raise InvalidArgumentError(f"lease ttl must be a positive number of seconds, not {ttl!r}")
    return int(ttl * 1_000_000)


def _message_rows(session_id: str, first_seq: int,
                  messages: Sequence[NewMessage]) -> list[tuple[Any, ...]]:
    return [(session_id, first_seq + i, int(msg.send_index), check_name(msg.role, "role"),
             dump_json(dict(msg.body))) for i, msg in enumerate(messages)]


class Store:
    """The durable home of every conversation. Get one with :func:`open_store`.

    Use it as an async context manager, or call :meth:`aclose`.
    """

    def __init__(self, db: Database, table_prefix: str, *, retries: int = 8) -> None:
        self._db = db
        self._names = TableNames(db.dialect, table_prefix)
        self._sql = _Statements(db, self._names)
        self._retries = retries

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

    def __repr__(self) -> str:
        return f"Store(backend={self.backend!r}, table_prefix={self.table_prefix!r})"

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; transactions in flight finish first."""
        await self._db.close()

    # -- transactions ------------------------------------------------------------------

    async def write(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                    *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a write transaction, retried on transient failures.

        ``fn`` must be safe to run again from the start (it only talks to ``conn``).
        """
        for attempt in range(self._retries):
            try:
                async with self._db.transaction() as conn:
                    return await fn(conn, *args, **kwargs)
            except TransientStoreError:
                if attempt == self._retries - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[Concatenate[Connection, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` in a read-only transaction over one snapshot."""
        for attempt in range(self._retries):
            try:
                async with self._db.transaction(write=False) as conn:
                    return await fn(conn, *args, **kwargs)
            except TransientStoreError:
                if attempt == self._retries - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _update_session(self, conn: Connection, stmt: _SessionUpdate, session_id: str,
                              assign: Sequence[Any], where: Sequence[Any] = (),
                              *, epoch: int | None = None,
                              refused: Callable[[Row], PowerLoopError] | None = None) -> Row:
        """Run a session-row update; return its ``RETURNING`` row or raise why not."""
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
        state = await conn.fetchone(self._sql.session_state, [session_id])
        if state is None:
            raise SessionNotFoundError(f"session {session_id!r} does not exist",
                                       session_id=session_id)
        if epoch is not None and int(state[0]) != epoch:
            raise LeaseLostError(
                f"session {session_id!r} was taken over (lease epoch {int(state[0])}, "
                f"this writer holds {epoch}); nothing was written",
                session_id=session_id, epoch=epoch)
        if refused is not None:
            raise refused(state)
        raise AssertionError(f"session update matched no row: {sql}")

    # -- sessions ----------------------------------------------------------------------

    async def create_session(self, session_id: str | None = None, *,
                             system_prompt: str | None = None,
                             metadata: Mapping[str, Any] | None = None,
                             parent_id: str | None = None) -> SessionRecord:
        """Create a session (``session_id`` is generated when omitted).

        Raises:
            SessionExistsError: a session with this id already exists.
        """
        sid = uuid.uuid4().hex if session_id is None else check_id(session_id)
        if parent_id is not None:
            check_id(parent_id, "parent_id")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidArgumentError("system_prompt must be a string or None")
        meta = dump_json(dict(metadata or {}))
        try:
            return await self.write(self._create_session_txn, sid, parent_id,
                                    dump_json(system_prompt), meta)
        except IntegrityConflictError:
            raise SessionExistsError(f"session {sid!r} already exists", session_id=sid) from None

    async def _create_session_txn(self, conn: Connection, sid: str, parent_id: str | None,
                                  prompt: str, meta: str) -> SessionRecord:
        await conn.execute(self._sql.insert_session, [sid, parent_id, prompt, meta])
        return await self._get_session_txn(conn, sid)

    async def get_session(self, session_id: str) -> SessionRecord:
        """Read one session. Raises :class:`SessionNotFoundError`."""
        return await self.read(self._get_session_txn, check_id(session_id))

    async def _get_session_txn(self, conn: Connection, session_id: str) -> SessionRecord:
        row = await conn.fetchone(self._sql.get_session, [session_id])
        if row is None:
            raise SessionNotFoundError(f"session {session_id!r} does not exist",
                                       session_id=session_id)
        return _session(row)

    async def list_sessions(self, *, limit: int = 100,
                            before: SessionRecord | None = None) -> list[SessionRecord]:
        """Sessions, newest first; pass the last one seen as ``before`` for the next page."""
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        args: list[Any]
        if before is None:
            sql, args = self._sql.list_sessions, [limit]
        else:
            at = to_us(before.created_at)
            sql, args = self._sql.list_sessions_before, [at, at, before.id, limit]
        rows = await self.read(_fetch, sql, args)
        return [_session(r) for r in rows]

    async def delete_session(self, session_id: str) -> None:
        """Delete a session and everything it holds. Raises :class:`SessionNotFoundError`."""
        await self.write(self._delete_session_txn, check_id(session_id))

    async def _delete_session_txn(self, conn: Connection, session_id: str) -> None:
        deleted = 0
        for sql in self._sql.delete:
            deleted = await conn.execute(sql, [session_id])
        if not deleted:  # the last statement deletes the session row itself
            raise SessionNotFoundError(f"session {session_id!r} does not exist",
                                       session_id=session_id)

    # -- messages ----------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[NewMessage], *,
                              epoch: int | None = None) -> list[int]:
        """Append messages in one transaction; return their seqs (contiguous).

        Args:
            epoch: The caller's lease epoch. When given, the append is fenced: if
                another holder has been granted the session since, nothing is written
                and :class:`LeaseLostError` is raised.
        """
        check_id(session_id)
        if not messages:
            return []
        return await self.write(self._append_txn, session_id, messages, epoch)

    async def _append_txn(self, conn: Connection, session_id: str,
                          messages: Sequence[NewMessage], epoch: int | None) -> list[int]:
        row = await self._update_session(conn, self._sql.append, session_id, [len(messages)],
                                         epoch=epoch)
        first = int(row[0]) - len(messages)
        await self._insert_messages(conn, session_id, first, messages)
        return list(range(first, first + len(messages)))

    async def _insert_messages(self, conn: Connection, session_id: str, first_seq: int,
                               messages: Sequence[NewMessage]) -> None:
        rows = _message_rows(session_id, first_seq, messages)
        if len(rows) == 1:
            await conn.execute(self._sql.insert_message, rows[0])
        elif rows:
            await conn.executemany(self._sql.insert_message, rows)

    async def read_messages(self, session_id: str, *, from_seq: int = 0,
                            limit: int | None = None) -> list[MessageRecord]:
        """Messages with ``seq >= from_seq`` in order (an indexed range read)."""
        check_id(session_id)
        if limit is None:
            rows = await self.read(_fetch, self._sql.read_messages, [session_id, from_seq])
        else:
            rows = await self.read(_fetch, self._sql.read_messages_limit,
                                   [session_id, from_seq, limit])
        return [_message(session_id, r) for r in rows]

    async def next_seq(self, session_id: str) -> int:
        """The seq the next message will get: a cheap token that changes on every append."""
        row = await self.read(_fetchone, self._sql.next_seq, [check_id(session_id)])
        if row is None:
            raise SessionNotFoundError(f"session {session_id!r} does not exist",
                                       session_id=session_id)
        return int(row[0])

    # -- leases ------------------------------------------------------------------------

    async def acquire_lease(self, session_id: str, owner: str, *, ttl: float) -> Lease:
        """Take the session's lease for ``ttl`` seconds (database clock).

        Succeeds when the lease is free, expired, or already held by ``owner`` (then it
        is extended and keeps its epoch). Any new grant bumps the epoch.

        Raises:
            SessionBusyError: another owner holds an unexpired lease.
            SessionNotFoundError: no such session.
        """
        return await self.write(self.acquire_lease_txn, check_id(session_id),
                                check_id(owner, "owner"), ttl=ttl)

    async def acquire_lease_txn(self, conn: Connection, session_id: str, owner: str, *,
                                ttl: float) -> Lease:
        """:meth:`acquire_lease` inside the caller's transaction."""

        def busy(state: Row) -> PowerLoopError:
            remaining = max(0.0, float(state[3] or 0) / 1_000_000)
            return SessionBusyError(
                f"session {session_id!r} is held by {state[2]!r} for another "
                f"{remaining:.1f}s", session_id=session_id, holder=state[2],
                retry_after=remaining)

        row = await self._update_session(conn, self._sql.acquire, session_id,
                                         [owner, owner, _ttl_us(ttl)], [owner], refused=busy)
        return Lease(session_id, owner, int(row[0]), from_us(row[1]))

    async def renew_lease(self, lease: Lease, *, ttl: float) -> Lease:
        """Extend a held lease. Raises :class:`LeaseLostError` if it was taken over."""
        return await self.write(self._renew_txn, lease, ttl)

    async def _renew_txn(self, conn: Connection, lease: Lease, ttl: float) -> Lease:
        def lost(_: Row) -> PowerLoopError:
            return LeaseLostError(f"lease on {lease.session_id!r} was released",
                                  session_id=lease.session_id, epoch=lease.epoch)

        row = await self._update_session(conn, self._sql.renew, lease.session_id,
                                         [_ttl_us(ttl)], [lease.owner], epoch=lease.epoch,
                                         refused=lost)
        return Lease(lease.session_id, lease.owner, lease.epoch, from_us(row[0]))

    async def release_lease(self, lease: Lease) -> bool:
        """Give a lease back; ``False`` if it was no longer held (nothing changed)."""
        return await self.write(self.release_lease_txn, lease)

    async def release_lease_txn(self, conn: Connection, lease: Lease) -> bool:
        """:meth:`release_lease` inside the caller's transaction."""
        args = [lease.session_id, lease.owner, lease.epoch]
        return await conn.execute(self._sql.release, args) > 0

    # -- sends -------------------------------------------------------------------------

    async def start_send(self, session_id: str, messages: Sequence[NewMessage], *,
                         epoch: int | None = None, source: str = "user",
                         request_key: str | None = None) -> SendRecord:
        """Open a send: its row and first messages, in one transaction.

        The messages' ``send_index`` is replaced by the new send's index. With a
        ``request_key`` already used in this session, the existing send is returned and
        nothing is written (an idempotent retry).

        Raises:
            SendPendingError: the previous send has not finished.
            LeaseLostError: ``epoch`` is stale.
        """
        check_id(session_id)
        check_name(source, "source")
        if request_key is not None:
            check_id(request_key, "request_key")
        return await self.write(self.start_send_txn, session_id, messages, epoch=epoch,
                                source=source, request_key=request_key)

    async def start_send_txn(self, conn: Connection, session_id: str,
                             messages: Sequence[NewMessage], *, epoch: int | None,
                             source: str, request_key: str | None) -> SendRecord:
        """:meth:`start_send` inside the caller's transaction."""
        if request_key is not None:
            row = await conn.fetchone(self._sql.send_by_key, [session_id, request_key])
            if row is not None:
                return _send(row)

        def pending(state: Row) -> PowerLoopError:
            return SendPendingError(
                f"session {session_id!r} has unfinished send #{state[1]}; resume, heal or "
                "abort it first", session_id=session_id, send_index=int(state[1]))

        row = await self._update_session(conn, self._sql.start_send, session_id,
                                         [len(messages)], epoch=epoch, refused=pending)
        index, first = int(row[0]) - 1, int(row[1]) - len(messages)
        await conn.execute(self._sql.insert_send,
                           [session_id, index, source, request_key, first])
        await self._insert_messages(
            conn, session_id, first, [NewMessage(index, m.role, m.body) for m in messages])
        return await self._get_send_txn(conn, session_id, index)

    async def finish_send(self, session_id: str, send_index: int,
                          messages: Sequence[NewMessage] = (), *, status: str = "done",
                          epoch: int | None = None, stop_reason: str | None = None,
                          rounds: int = 0, usage: Mapping[str, Any] | None = None,
                          error: Mapping[str, Any] | None = None) -> SendRecord:
        """Close the pending send with its last messages and outcome, in one transaction."""
        check_id(session_id)
        if status not in SEND_STATUSES - {"running"}:
            raise InvalidArgumentError(
                f"status {status!r} is not a final send status: "
                f"{', '.join(sorted(SEND_STATUSES - {'running'}))}")
        if stop_reason is not None:
            check_name(stop_reason, "stop_reason")
        return await self.write(
            self.finish_send_txn, session_id, send_index, messages, status=status,
            epoch=epoch, stop_reason=stop_reason, rounds=rounds, usage=usage, error=error)

    async def finish_send_txn(self, conn: Connection, session_id: str, send_index: int,
                              messages: Sequence[NewMessage], *, status: str,
                              epoch: int | None, stop_reason: str | None, rounds: int,
                              usage: Mapping[str, Any] | None,
                              error: Mapping[str, Any] | None) -> SendRecord:
        """:meth:`finish_send` inside the caller's transaction."""

        def not_pending(state: Row) -> PowerLoopError:
            return InvalidArgumentError(
                f"send #{send_index} of session {session_id!r} is not the pending send "
                f"(pending: {state[1]})")

        row = await self._update_session(conn, self._sql.finish_send, session_id,
                                         [len(messages)], [send_index], epoch=epoch,
                                         refused=not_pending)
        first = int(row[0]) - len(messages)
        await self._insert_messages(
            conn, session_id, first, [NewMessage(send_index, m.role, m.body) for m in messages])
        await conn.execute(self._sql.end_send, [
            status, stop_reason, int(rounds), dump_json(dict(usage or {})),
            None if error is None else dump_json(dict(error)), session_id, send_index])
        return await self._get_send_txn(conn, session_id, send_index)

    async def get_send(self, session_id: str, send_index: int) -> SendRecord:
        """One send. Raises :class:`InvalidArgumentError` when it does not exist."""
        return await self.read(self._get_send_txn, check_id(session_id), send_index)

    async def _get_send_txn(self, conn: Connection, session_id: str,
                            send_index: int) -> SendRecord:
        row = await conn.fetchone(self._sql.get_send, [session_id, send_index])
        if row is None:
            raise InvalidArgumentError(f"session {session_id!r} has no send #{send_index}")
        return _send(row)

    async def list_sends(self, session_id: str, *, from_index: int = 0) -> list[SendRecord]:
        """The session's sends from ``from_index`` on, in order."""
        rows = await self.read(_fetch, self._sql.list_sends, [check_id(session_id), from_index])
        return [_send(r) for r in rows]

    # -- maintenance -------------------------------------------------------------------

    async def prune(self, *, older_than: datetime, batch_size: int = 500) -> int:
        """Delete sessions not updated since ``older_than`` (leased ones are kept).

        Runs in batches of ``batch_size`` sessions, one transaction each; returns the
        number deleted.
        """
        cutoff = to_us(older_than)
        total = 0
        while True:
            deleted = await self.write(self._prune_batch_txn, cutoff, batch_size)
            total += deleted
            if deleted < batch_size:
                return total

    async def _prune_batch_txn(self, conn: Connection, cutoff: int, batch_size: int) -> int:
        ids = [r[0] for r in await conn.fetch(self._sql.prune_candidates, [cutoff, batch_size])]
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        for table in reversed(session_tables()):
            name = self._db.dialect.quote(self._names.raw(table))
            await conn.execute(self._db.dialect.render(
                f"DELETE FROM {name} WHERE {table.session_column} IN ({marks})"), ids)
        return len(ids)

    async def vacuum(self) -> None:
        """Reclaim space and refresh planner statistics (runs outside transactions)."""
        tables = [self._names.raw(t) for t in session_tables()]
        async with self._db.autocommit() as conn:
            for statement in self._db.dialect.vacuum(tables):
                await conn.execute(statement)

    # -- export / import ---------------------------------------------------------------

    def export_session(self, session_id: str) -> AsyncIterator[str]:
        """The session as JSON Lines (see :mod:`power_loop.store.transfer`)."""
        from power_loop.store.transfer import export_session

        return export_session(self, self._names, check_id(session_id))

    async def import_session(self, lines: Iterable[str], *, replace: bool = False) -> str:
        """Load a session exported by :meth:`export_session`; return its id."""
        from power_loop.store.transfer import import_session

        return await import_session(self, self._names, lines, replace=replace)


async def _fetch(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)


async def _fetchone(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    return await conn.fetchone(sql, args)


async def open_store(
    dsn: str,
    *,
    schema: SchemaPolicy = SchemaPolicy.AUTO_CREATE,
    table_prefix: str = "pl_",
    pool_min_size: int | None = None,
    pool_max_size: int | None = None,
    connect_timeout: float | None = None,
    command_timeout: float | None = None,
    busy_timeout: float | None = None,
    synchronous: str | None = None,
) -> Store:
    """Open the store behind ``dsn`` and apply the schema policy.

    Args:
        dsn: ``app.db``, ``sqlite:///app.db``, ``:memory:``, ``postgresql://...`` or
            ``mysql://...``; connection options may also go in its query string.
        schema: Create/upgrade the tables, verify them, or leave them alone.
        table_prefix: Prefix of every table name, so several apps can share a
            database; a plain identifier, checked before any SQL runs.
        pool_min_size, pool_max_size, connect_timeout, command_timeout, busy_timeout,
            synchronous: see :class:`~power_loop.store.dsn.ConnectOptions`; these win
            over the DSN's query string.

    Raises:
        InvalidIdentifierError: ``table_prefix`` is not a plain identifier.
        InvalidDSNError, MissingDriverError: the DSN cannot be used.
        SchemaMissingError: policy ``VERIFY`` found the tables missing (carries the DDL).
    """
    prefix = validate_prefix(table_prefix)
    if not isinstance(schema, SchemaPolicy):
        raise InvalidArgumentError(f"schema must be a SchemaPolicy, not {schema!r}")
    db = await connect(dsn, pool_min_size=pool_min_size, pool_max_size=pool_max_size,
                       connect_timeout=connect_timeout, command_timeout=command_timeout,
                       busy_timeout=busy_timeout, synchronous=synchronous)
    try:
        await ensure_schema(db, prefix, schema)
    except BaseException:
        await db.close()
        raise
    return Store(db, prefix)
