"""The store: sessions, messages, sends and leases over any :class:`Database`.

Written once for every engine; see :mod:`power_loop.store.core` for how transactions,
retries and the fenced session-row update work. :class:`Store` composes one part per
concern, each a class in its own module that derives from
:class:`~power_loop.store.core.StoreCore` alone: :mod:`~power_loop.store.sends` (the
send lifecycle), :mod:`~power_loop.store.context_ops` (folds, notes, projections),
:mod:`~power_loop.store.timer_ops` (timers), :mod:`~power_loop.store.claims` (claims of
stranded work) and :mod:`~power_loop.store.children` (sub-agent links). It adds
sessions, messages, leases, maintenance and transfer (:mod:`~power_loop.store.transfer`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from power_loop.errors import (
    IntegrityConflictError,
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SchemaMissingError,
    SeqConflictError,
    SessionExistsError,
)
from power_loop.store import settle
from power_loop.store.children import ChildOps
from power_loop.store.claims import ClaimOps
from power_loop.store.context_ops import ContextOps
from power_loop.store.core import not_found, ttl_us
from power_loop.store.dsn import connect, dialect_for, parse_dsn
from power_loop.store.migrations import (
    SchemaPolicy,
    ensure_schema,
    render_ddl,
    session_tables,
)
from power_loop.store.port import Connection, Row
from power_loop.store.records import (
    Lease,
    MessageRecord,
    NewMessage,
    SessionRecord,
    check_count,
    check_id,
    dump_json,
    from_us,
    load_json,
    to_us,
)
from power_loop.store.schema import validate_prefix
from power_loop.store.sends import SendOps, busy_error
from power_loop.store.statements import fetch, fetchone, message_from_row, session_from_row
from power_loop.store.timer_ops import TimerOps
from power_loop.store.waits import waits_of
from power_loop.store.window_cache import DEFAULT_CACHE_BYTES, WindowCache


class Store(ChildOps, ClaimOps, TimerOps, ContextOps, SendOps):
    """The durable home of every conversation. Get one with :func:`open_store`.

    Use it as an async context manager, or call :meth:`aclose`.
    """

    def __repr__(self) -> str:
        return f"Store(backend={self.backend!r}, table_prefix={self.table_prefix!r})"

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidArgumentError(
                f"metadata must be a mapping (a dict), not {type(metadata).__name__}")
        meta = dump_json(dict(metadata or {}))
        try:
            return await self._write(self._create_session_txn, sid, parent_id,
                                     dump_json(system_prompt), meta)
        except IntegrityConflictError:
            raise SessionExistsError(f"session {sid!r} already exists", session_id=sid) from None

    async def _create_session_txn(self, conn: Connection, sid: str, parent_id: str | None,
                                  prompt: str, meta: str) -> SessionRecord:
        await conn.execute(self._sql.insert_session,
                           [sid, parent_id, prompt, meta, uuid.uuid4().hex])
        return await self._get_session_txn(conn, sid)

    async def get_session(self, session_id: str) -> SessionRecord:
        """Read one session. Raises :class:`SessionNotFoundError`."""
        return await self._read(self._get_session_txn, check_id(session_id))

    async def _get_session_txn(self, conn: Connection, session_id: str) -> SessionRecord:
        row = await conn.fetchone(self._sql.get_session, [session_id])
        if row is None:
            raise not_found(session_id)
        return session_from_row(row)

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
        rows = await self._read(fetch, sql, args)
        return [session_from_row(r) for r in rows]

    async def delete_session(self, session_id: str) -> None:
        """Delete a session and everything it holds. Raises :class:`SessionNotFoundError`."""
        await self._write(self._delete_session_txn, check_id(session_id))

    async def _delete_session_txn(self, conn: Connection, session_id: str) -> None:
        deleted = 0
        for sql in self._sql.delete:
            deleted = await conn.execute(sql, [session_id])
        if not deleted:  # the last statement deletes the session row itself
            raise not_found(session_id)

    # -- messages ----------------------------------------------------------------------

    async def append_messages(self, session_id: str, messages: Sequence[NewMessage], *,
                              epoch: int | None = None,
                              extend_lease: float | None = None,
                              expect_seq: int | None = None,
                              finish_waits: Sequence[str] = ()) -> list[int]:
        """Append messages in one transaction; return their seqs (contiguous).

        Args:
            epoch: The caller's lease epoch. When given, the append is fenced: if
                another holder has been granted the session since, nothing is written
                and :class:`LeaseLostError` is raised.
            extend_lease: With ``epoch``, also push the lease's expiry to this many
                seconds from now, in the same statement.
            expect_seq: The seq the first message must get (the session's
                ``next_seq`` as the caller knows it). The append is then conditional
                on it, which makes it verifiable: a commit that fails without an answer
                is settled by reading the messages at that seq, never replayed.
            finish_waits: Ids of started calls' waits (:mod:`power_loop.store.waits`)
                whose results these messages are: each one ``executing`` becomes
                ``done`` in the same transaction.

        Raises:
            SeqConflictError: ``expect_seq`` is not the session's next seq: nothing
                was written.
            CommitInDoubtError: without ``expect_seq``, the commit failed without an
                answer (it was not replayed).
        """
        check_id(session_id)
        if expect_seq is not None:
            check_count(expect_seq, "expect_seq")
        if not messages:
            return []
        if extend_lease is not None and epoch is None:
            raise InvalidArgumentError("extend_lease needs the lease's epoch")
        extend = None if extend_lease is None else ttl_us(extend_lease)

        async def attempt() -> list[int]:
            return await self._append(session_id, messages, epoch, extend, expect_seq,
                                      tuple(finish_waits))

        if expect_seq is None:
            return await attempt()
        expect = expect_seq
        return await self._settled(
            "append_messages", attempt,
            lambda: self._read(settle.appended, self._sql, session_id, messages, expect),
            (SeqConflictError, LeaseLostError))

    async def _append(self, session_id: str, messages: Sequence[NewMessage],
                      epoch: int | None, extend: int | None,
                      expect: int | None, finish_waits: Sequence[str] = ()) -> list[int]:
        fused = self._fused
        if fused is None or finish_waits:  # the fused statement writes messages only
            return await self._write(self._append_txn, session_id, messages, epoch, extend,
                                     expect, finish_waits)
        sql, args = fused.append(session_id, messages, epoch, extend, expect)
        row = await self._write_one(sql, args, operation="append_messages")
        if row is None:
            raise await self._read(self._why_missed, session_id, epoch, None, sql,
                                   expect=expect)
        first = int(row[0]) - len(messages)
        return list(range(first, first + len(messages)))

    async def _append_txn(self, conn: Connection, session_id: str,
                          messages: Sequence[NewMessage], epoch: int | None,
                          extend: int | None, expect: int | None = None,
                          finish_waits: Sequence[str] = ()) -> list[int]:
        where = () if expect is None else (expect,)
        if extend is None:
            stmt = self._sql.append if expect is None else self._sql.append_expect
            row = await self._update_session(conn, stmt, session_id, [len(messages)], where,
                                             epoch=epoch, expect=expect)
        else:
            stmt = (self._sql.append_extend if expect is None
                    else self._sql.append_extend_expect)
            row = await self._update_session(conn, stmt, session_id,
                                             [len(messages), extend], where, epoch=epoch,
                                             expect=expect)
        first = int(row[0]) - len(messages)
        await self._insert_messages(conn, session_id, first, messages)
        if finish_waits:
            await waits_of(self).finish_txn(conn, session_id, finish_waits)
        return list(range(first, first + len(messages)))

    async def read_messages(self, session_id: str, *, from_seq: int = 0,
                            limit: int | None = None) -> list[MessageRecord]:
        """Messages with ``seq >= from_seq`` in order (an indexed range read)."""
        check_id(session_id)
        check_count(from_seq, "from_seq")
        check_count(limit, "limit", allow_none=True)
        if limit is None:
            rows = await self._read(self._rows_of_session, self._sql.read_messages,
                                    [session_id, from_seq])
        else:
            rows = await self._read(self._rows_of_session, self._sql.read_messages_limit,
                                    [session_id, from_seq, limit])
        return await _decoded(session_id, rows)

    async def read_message_bodies(self, session_id: str, *, from_seq: int,
                                  limit: int) -> list[tuple[int, int, str, Any]]:
        """``(seq, send_index, role, body)`` of up to ``limit`` messages from ``from_seq``.

        The lean form of :meth:`read_messages` for building requests: the same indexed
        range read, without the timestamps or the record objects.
        """
        check_id(session_id)
        check_count(from_seq, "from_seq")
        check_count(limit, "limit")
        rows = await self._read(self._rows_of_session, self._sql.read_messages_limit,
                                [session_id, from_seq, limit])
        return [(int(r[0]), int(r[1]), r[2], load_json(r[3])) for r in rows]

    async def read_message_texts(self, session_id: str, *, from_seq: int,
                                 upto_seq: int) -> Sequence[Sequence[Any]]:
        """Rows ``(key, body)`` of the messages in ``[from_seq, upto_seq)``: the key is
        the send index of a user message, :data:`~power_loop.store.statements.ASSISTANT_KEY`
        plus it for an assistant's and ``-1 - send_index`` for a tool result's (``None``
        for any other role, or a send index below 0 or of ``ASSISTANT_KEY`` or more, which
        power_loop never writes), the body as the driver returns the stored JSON (text), undecoded.

        The leanest read for building requests: two columns of an indexed range, one
        statement (each column of each row costs a cold read about a tenth of its time).
        The seqs are not read: every seq of the range is there exactly when
        ``upto_seq - from_seq`` rows come back (a seq is unique in its session).
        """
        check_id(session_id)
        check_count(from_seq, "from_seq")
        check_count(upto_seq, "upto_seq")
        rows = await self._read(self._rows_of_session, self._sql.read_bodies_range,
                                [session_id, from_seq, upto_seq])
        return rows

    async def next_seq(self, session_id: str) -> int:
        """The seq the next message will get: a cheap token that changes on every append."""
        row = await self._read(fetchone, self._sql.next_seq, [check_id(session_id)])
        if row is None:
            raise not_found(session_id)
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
        return await self._write(self._acquire_lease_txn, check_id(session_id),
                                 check_id(owner, "owner"), ttl=ttl)

    async def _acquire_lease_txn(self, conn: Connection, session_id: str, owner: str, *,
                                 ttl: float) -> Lease:
        """:meth:`acquire_lease` inside the caller's transaction."""
        row = await self._update_session(conn, self._sql.acquire, session_id,
                                         [owner, owner, ttl_us(ttl)], [owner],
                                         refused=lambda state: busy_error(session_id, state))
        return Lease(session_id, owner, int(row[0]), from_us(row[1]))

    async def renew_lease(self, lease: Lease, *, ttl: float) -> Lease:
        """Extend a held lease. Raises :class:`LeaseLostError` if it was taken over."""
        return await self._write(self._renew_txn, lease, ttl)

    async def _renew_txn(self, conn: Connection, lease: Lease, ttl: float) -> Lease:
        def lost(_: Row) -> PowerLoopError:
            return LeaseLostError(f"lease on {lease.session_id!r} was released",
                                  session_id=lease.session_id, epoch=lease.epoch)

        row = await self._update_session(conn, self._sql.renew, lease.session_id,
                                         [ttl_us(ttl)], [lease.owner], epoch=lease.epoch,
                                         refused=lost)
        return Lease(lease.session_id, lease.owner, lease.epoch, from_us(row[0]))

    async def release_lease(self, lease: Lease) -> bool:
        """Give a lease back; ``False`` if it was no longer held (nothing changed)."""
        return await self._write(self._release_lease_txn, lease)

    async def _release_lease_txn(self, conn: Connection, lease: Lease) -> bool:
        """:meth:`release_lease` inside the caller's transaction."""
        args = [lease.session_id, lease.owner, lease.epoch]
        return await conn.execute(self._sql.release, args) > 0

    # -- maintenance -------------------------------------------------------------------

    async def prune(self, *, older_than: datetime, batch_size: int = 500) -> int:
        """Delete sessions not updated since ``older_than`` (leased ones are kept).

        Runs in batches of ``batch_size`` sessions, one transaction each; returns the
        number deleted.
        """
        cutoff = to_us(older_than)
        total = 0
        while True:
            deleted = await self._write(self._prune_batch_txn, cutoff, batch_size)
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

    def export_session(self, session_id: str) -> AsyncGenerator[str, None]:
        """The session as JSON Lines (see :mod:`power_loop.store.transfer`)."""
        from power_loop.store.transfer import export_session

        return export_session(self, self._names, check_id(session_id))

    async def import_session(self, lines: Iterable[str], *, replace: bool = False) -> str:
        """Load a session exported by :meth:`export_session`; return its id."""
        from power_loop.store.transfer import import_session

        return await import_session(self, self._names, lines, replace=replace)



_DECODE_SLICE = 0.002
"""Seconds of decoding messages between two yields to the event loop."""


async def _decoded(session_id: str, rows: Sequence[Row]) -> list[MessageRecord]:
    """The messages of ``rows``, decoded in slices with the event loop let through
    between them: a long history (tens of MB of JSON) never holds it for its whole
    decode, only for one slice (or one message)."""
    messages = []
    deadline = time.perf_counter() + _DECODE_SLICE
    for row in rows:
        messages.append(message_from_row(session_id, row))
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + _DECODE_SLICE
    return messages


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
    cache_bytes: int = DEFAULT_CACHE_BYTES,
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
        cache_bytes: The bound of the store's window cache (each session's rendered
            history, shared by every loop over this store), in estimated bytes;
            ``0`` disables it. See :attr:`Store.window_cache`.

    Raises:
        InvalidIdentifierError: ``table_prefix`` is not a plain identifier.
        InvalidDSNError, MissingDriverError: the DSN cannot be used.
        SchemaMissingError: policy ``VERIFY`` found the tables missing (carries the DDL).
    """
    prefix = validate_prefix(table_prefix)
    cache = WindowCache[Any](cache_bytes)
    if not isinstance(schema, SchemaPolicy):
        raise InvalidArgumentError(f"schema must be a SchemaPolicy, not {schema!r}")
    try:
        # VERIFY must not create anything, not even an empty SQLite file.
        db = await connect(dsn, pool_min_size=pool_min_size, pool_max_size=pool_max_size,
                           connect_timeout=connect_timeout, command_timeout=command_timeout,
                           busy_timeout=busy_timeout, synchronous=synchronous,
                           create=schema is not SchemaPolicy.VERIFY)
    except SchemaMissingError as exc:
        if exc.ddl:
            raise
        raise SchemaMissingError(exc.reason, backend=exc.backend or "",
                                 ddl=render_ddl(dialect_for(parse_dsn(dsn).backend.name),
                                                prefix)) from None
    try:
        await ensure_schema(db, prefix, schema)
    except BaseException:
        await db.close()
        raise
    store = Store(db, prefix)
    store._cache = cache
    return store
