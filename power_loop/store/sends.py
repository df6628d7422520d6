"""Send lifecycle operations: open, finish, pause, and the lease-holding variants.

A send is a row in ``sends`` plus its messages. ``pending_send`` on the session row
points at the one send not yet finished, so a session has at most one, and a worker can
find it with a single-table query. The loop's path uses the fused forms: one session-row
update takes the lease and opens the send (:meth:`SendOps.begin_send`), one finishes the
send and releases the lease (:meth:`~power_loop.Store.close_send`). Where the engine
allows it, each of these transactions is also one round trip
(:mod:`power_loop.store.fused`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from power_loop.errors import (
    InvalidArgumentError,
    LeaseLostError,
    PowerLoopError,
    SendNotFoundError,
    SendPendingError,
    SessionBusyError,
)
from power_loop.store import settle
from power_loop.store.core import NotLanded, StoreCore, ttl_us
from power_loop.store.fused import FusedWrites
from power_loop.store.port import Connection, Row
from power_loop.store.records import (
    Lease,
    NewMessage,
    SendRecord,
    SendStart,
    SessionClaim,
    check_count,
    check_id,
    check_name,
    dump_json,
    from_us,
    load_json,
)
from power_loop.store.statements import send_from_row

_Taken = TypeVar("_Taken")
HAND_BACK_SECONDS = 5.0
"""How long a cancelled lease-taking write may spend giving the lease back."""


async def _execute(conn: Connection, sql: str, args: Sequence[Any]) -> int:
    return await conn.execute(sql, args)


SEND_STATUSES = frozenset({"pending", "done", "failed", "cancelled", "aborted"})
FINAL_STATUSES = SEND_STATUSES - {"pending"}


def busy_error(session_id: str, state: Row) -> SessionBusyError:
    """Why a lease could not be taken, from the row's state read just after."""
    if not _lease_held(state):
        # Read at READ COMMITTED after the update missed, the state may already show the
        # holder gone: the update lost a race with its release. Try again at once.
        return SessionBusyError(
            f"session {session_id!r} changed while its lease was being taken; try again",
            session_id=session_id, holder=state[2], retry_after=0.0)
    remaining = max(0.0, float(state[3]) / 1_000_000)
    return SessionBusyError(
        f"session {session_id!r} is held by {state[2]!r} for another {remaining:.1f}s",
        session_id=session_id, holder=state[2], retry_after=remaining)


def _pending(session_id: str, state: Row) -> SendPendingError:
    return SendPendingError(
        f"session {session_id!r} has unfinished send #{state[1]}; resume, heal or abort it "
        "first", session_id=session_id, send_index=int(state[1]))


def _begin_refused(session_id: str) -> Callable[[Row], PowerLoopError]:
    """Why ``begin_send``'s update matched no row, from the row's state."""

    def refused(state: Row) -> PowerLoopError:
        if state[1] is not None and not _lease_held(state):
            return _pending(session_id, state)
        return busy_error(session_id, state)

    return refused


def _lease_held(state: Row) -> bool:
    return state[2] is not None and state[3] is not None and int(state[3]) >= 0


class SendOps(StoreCore):
    """Operations on sends (mixed into :class:`~power_loop.Store`)."""

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
        return await self._write(self._start_send_txn, session_id, messages, epoch,
                                 source, request_key)

    async def _start_send_txn(self, conn: Connection, session_id: str,
                              messages: Sequence[NewMessage], epoch: int | None, source: str,
                              request_key: str | None) -> SendRecord:
        if request_key is not None:
            existing = await self._send_by_key(conn, session_id, request_key)
            if existing is not None:
                return existing
        row = await self._update_session(conn, self._sql.start_send, session_id,
                                         [len(messages)], epoch=epoch,
                                         refused=lambda state: _pending(session_id, state))
        index, first = int(row[0]) - 1, int(row[1]) - len(messages)
        await self._open_send(conn, session_id, index, first, messages, source, request_key)
        return await self._get_send_txn(conn, session_id, index)

    async def begin_send(self, session_id: str, messages: Sequence[NewMessage], *,
                         owner: str, ttl: float, source: str = "user",
                         request_key: str | None = None) -> SendStart:
        """Take the session's lease and open a send, in one statement and transaction.

        The lease must be free or expired: a new send never re-enters a lease, not even
        one held by the same owner (each send uses an owner of its own).

        Raises:
            SessionBusyError: the lease is held and has not expired.
            SendPendingError: the lease is free but a previous send never finished.
            SessionNotFoundError: no such session.
        """
        check_id(session_id)
        check_id(owner, "owner")
        check_name(source, "source")
        if request_key is not None:
            check_id(request_key, "request_key")
        ttl_micros = ttl_us(ttl)

        async def attempt() -> SendStart:
            if self._fused is not None:
                return await self._begin_send_fused(self._fused, session_id, messages,
                                                    owner, ttl_micros, source, request_key)
            return await self._write(self._begin_send_txn, session_id, messages, owner,
                                     ttl_micros, source, request_key)

        async def check(conn: Connection) -> SendStart | NotLanded:
            row = await settle.leased_to(conn, self._sql, session_id, owner)
            if isinstance(row, NotLanded):
                return row
            return await self._started_from_state(conn, session_id, owner, row)

        return await self._taking(session_id, owner, lambda: self._settled(
            "begin_send", attempt, lambda: self._read(check), (SessionBusyError,)))

    async def _taking(self, session_id: str, owner: str,
                      take: Callable[[], Awaitable[_Taken]]) -> _Taken:
        """Run ``take``, a write that takes the session's lease for ``owner``.

        A cancellation landing while it is in flight does not tell whether it
        committed: a lease nobody knows it holds would keep the session from every
        other holder (a worker among them) until it expires. So before the
        cancellation goes on, the lease is given back by its owner (unique to this
        write), in this task, within :data:`HAND_BACK_SECONDS`: a copy of the write
        still running on the server holds the session row's lock, and the release waits
        for it, then frees what it took.
        """
        try:
            return await take()
        except asyncio.CancelledError:
            await self._hand_back([(self._sql.release_owner, [session_id, owner])])
            raise

    async def _hand_back(self, releases: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run release statements, each in its own transaction, within
        :data:`HAND_BACK_SECONDS` in all; what is not released lapses at its expiry,
        as a killed process's leases do."""
        try:
            async with asyncio.timeout(HAND_BACK_SECONDS):
                for sql, args in releases:
                    await self._write(_execute, sql, args)
        except (PowerLoopError, TimeoutError):
            pass

    async def _started_from_state(self, conn: Connection, session_id: str, owner: str,
                                  row: Row) -> SendStart:
        """What ``begin_send`` returned, from the state it left (see settle.leased_to)."""
        index = int(row[2]) - 1
        send = await self._get_send_txn(conn, session_id, index)
        lease = Lease(session_id, owner, int(row[0]), from_us(row[1]))
        return SendStart(lease, index, send.first_seq, load_json(row[4]), row[5],
                         load_json(row[6]))

    async def _begin_send_fused(self, fused: FusedWrites, session_id: str,
                                messages: Sequence[NewMessage], owner: str, ttl: int,
                                source: str, request_key: str | None) -> SendStart:
        sql, args = fused.begin_send(session_id, messages, owner, ttl, source, request_key)
        row = await self._write_one(sql, args, operation="begin_send")
        if row is None:
            return await self._read(self._begin_refused, session_id, request_key, sql)
        return self._started(session_id, owner, messages, row)

    async def _begin_refused(self, conn: Connection, session_id: str,
                             request_key: str | None, sql: str) -> SendStart:
        """Why a fused ``begin_send`` wrote nothing: the request key was used (then the
        send it opened), else the lease or the pending send (raised)."""
        if request_key is not None:
            existing = await self._send_by_key(conn, session_id, request_key)
            if existing is not None:
                return SendStart(None, existing.send_index, existing.first_seq, None,
                                 existing=existing)
        raise await self._why_missed(conn, session_id, None, _begin_refused(session_id), sql)

    @staticmethod
    def _started(session_id: str, owner: str, messages: Sequence[NewMessage],
                 row: Row) -> SendStart:
        lease = Lease(session_id, owner, int(row[0]), from_us(row[1]))
        return SendStart(lease, int(row[2]) - 1, int(row[3]) - len(messages),
                         load_json(row[4]), row[5], load_json(row[6]))

    async def _begin_send_txn(self, conn: Connection, session_id: str,
                              messages: Sequence[NewMessage], owner: str, ttl: int,
                              source: str, request_key: str | None) -> SendStart:
        if request_key is not None:
            existing = await self._send_by_key(conn, session_id, request_key)
            if existing is not None:
                return SendStart(None, existing.send_index, existing.first_seq, None,
                                 existing=existing)
        row = await self._update_session(conn, self._sql.begin_send, session_id,
                                         [owner, ttl, len(messages)],
                                         refused=_begin_refused(session_id))
        start = self._started(session_id, owner, messages, row)
        await self._open_send(conn, session_id, start.send_index, start.first_seq, messages,
                              source, request_key)
        return start

    async def _open_send(self, conn: Connection, session_id: str, index: int, first: int,
                         messages: Sequence[NewMessage], source: str,
                         request_key: str | None) -> None:
        await conn.execute(self._sql.insert_send, [session_id, index, source, request_key, first])
        await self._insert_messages(conn, session_id, first, messages, index)

    async def claim_session(self, session_id: str, *, owner: str, ttl: float) -> SessionClaim:
        """Take a free (or expired) lease and report the session's pending send.

        Raises:
            SessionBusyError: another holder's lease has not expired.
        """
        check_id(session_id)
        check_id(owner, "owner")
        ttl_micros = ttl_us(ttl)

        async def check(conn: Connection) -> SessionClaim | NotLanded:
            row = await settle.leased_to(conn, self._sql, session_id, owner)
            if isinstance(row, NotLanded):
                return row
            lease = Lease(session_id, owner, int(row[0]), from_us(row[1]))
            return SessionClaim(lease, None if row[8] is None else int(row[8]), int(row[3]),
                                load_json(row[4]), row[5], load_json(row[6]))

        return await self._taking(session_id, owner, lambda: self._settled(
            "claim_session", lambda: self._write(self._claim_txn, session_id, owner, ttl_micros),
            lambda: self._read(check), (SessionBusyError,)))

    async def _claim_txn(self, conn: Connection, session_id: str, owner: str,
                         ttl: int) -> SessionClaim:
        row = await self._update_session(conn, self._sql.claim, session_id, [owner, ttl],
                                         refused=lambda state: busy_error(session_id, state))
        lease = Lease(session_id, owner, int(row[0]), from_us(row[1]))
        return SessionClaim(lease, None if row[2] is None else int(row[2]), int(row[3]),
                            load_json(row[4]), row[5], load_json(row[6]))

    async def finish_send(self, session_id: str, send_index: int,
                          messages: Sequence[NewMessage] = (), *, status: str = "done",
                          epoch: int | None = None, release: Lease | None = None,
                          stop_reason: str | None = None, rounds: int = 0,
                          usage: Mapping[str, Any] | None = None,
                          error: Mapping[str, Any] | None = None) -> SendRecord:
        """Close the pending send with its last messages and outcome, in one transaction.

        Args:
            release: The caller's lease, released in the same statement (its epoch
                fences the write, as ``epoch`` does).
        """
        check_id(session_id)
        check_count(send_index, "send_index")
        if status not in FINAL_STATUSES:
            raise InvalidArgumentError(f"status {status!r} is not a final send status: "
                                       f"{', '.join(sorted(FINAL_STATUSES))}")
        if stop_reason is not None:
            check_name(stop_reason, "stop_reason")
        async def attempt() -> SendRecord:
            return await self._write(
                self._finish_and_read_txn, session_id, send_index, messages, status=status,
                epoch=epoch, release=release, stop_reason=stop_reason, rounds=rounds,
                usage=usage, error=error)

        async def check(conn: Connection) -> SendRecord | NotLanded:
            closed = await settle.send_closed(conn, self._sql, session_id, send_index,
                                              len(messages))
            if isinstance(closed, NotLanded):
                return closed
            return await self._get_send_txn(conn, session_id, send_index)

        return await self._settled("finish_send", attempt, lambda: self._read(check),
                                   (LeaseLostError, InvalidArgumentError))

    async def _finish_and_read_txn(self, conn: Connection, /, session_id: str,
                                   send_index: int, messages: Sequence[NewMessage],
                                   **outcome: Any) -> SendRecord:
        await self._finish_send_txn(conn, session_id, send_index, messages, **outcome)
        return await self._get_send_txn(conn, session_id, send_index)

    async def _finish_send_txn(self, conn: Connection, session_id: str, send_index: int,
                               messages: Sequence[NewMessage], *, status: str,
                               epoch: int | None, release: Lease | None,
                               stop_reason: str | None, rounds: int,
                               usage: Mapping[str, Any] | None,
                               error: Mapping[str, Any] | None) -> int:
        """:meth:`finish_send` inside the caller's transaction; returns the first new seq."""
        stmt = self._sql.finish_send if release is None else self._sql.finish_send_release
        fence = epoch if release is None else release.epoch
        row = await self._update_session(conn, stmt, session_id, [len(messages)], [send_index],
                                         epoch=fence,
                                         refused=lambda state: self._not_pending(
                                             session_id, send_index, state))
        first = int(row[0]) - len(messages)
        await self._insert_messages(conn, session_id, first, messages, send_index)
        await conn.execute(self._sql.end_send, [
            status, stop_reason, int(rounds), dump_json(dict(usage or {})),
            None if error is None else dump_json(dict(error)), session_id, send_index])
        return first

    async def pause_send(self, session_id: str, send_index: int,
                         messages: Sequence[NewMessage], *, lease: Lease,
                         error: Mapping[str, Any]) -> int:
        """Record messages and an error, release the lease, leave the send pending.

        What a loop does when the model fails mid-send: the partial output is kept and
        the send can be resumed later. Returns the first new seq.
        """
        check_id(session_id)
        check_count(send_index, "send_index")
        return await self._write(self._pause_txn, session_id, send_index, messages, lease, error)

    async def _pause_txn(self, conn: Connection, session_id: str, send_index: int,
                         messages: Sequence[NewMessage], lease: Lease,
                         error: Mapping[str, Any]) -> int:
        row = await self._update_session(conn, self._sql.pause_send, session_id,
                                         [len(messages)], [send_index], epoch=lease.epoch,
                                         refused=lambda state: self._not_pending(
                                             session_id, send_index, state))
        first = int(row[0]) - len(messages)
        await self._insert_messages(conn, session_id, first, messages, send_index)
        await conn.execute(self._sql.send_error, [dump_json(dict(error)), session_id, send_index])
        return first

    @staticmethod
    def _not_pending(session_id: str, send_index: int, state: Row) -> PowerLoopError:
        return InvalidArgumentError(
            f"send #{send_index} of session {session_id!r} is not the pending send "
            f"(pending: {state[1]})")

    async def get_send(self, session_id: str, send_index: int) -> SendRecord:
        """One send.

        Raises:
            SessionNotFoundError: no such session.
            SendNotFoundError: the session has no send with this index.
        """
        check_count(send_index, "send_index")
        return await self._read(self._get_send_txn, check_id(session_id), send_index)

    async def _get_send_txn(self, conn: Connection, session_id: str,
                            send_index: int) -> SendRecord:
        row = await conn.fetchone(self._sql.get_send, [session_id, send_index])
        if row is None:
            await self._require_session(conn, session_id)
            raise SendNotFoundError(f"session {session_id!r} has no send #{send_index}",
                                    session_id=session_id, send_index=send_index)
        return send_from_row(row)

    async def _send_by_key(self, conn: Connection, session_id: str,
                           request_key: str) -> SendRecord | None:
        row = await conn.fetchone(self._sql.send_by_key, [session_id, request_key])
        return None if row is None else send_from_row(row)

    async def list_sends(self, session_id: str, *, from_index: int = 0) -> list[SendRecord]:
        """The session's sends from ``from_index`` on, in order."""
        check_count(from_index, "from_index")
        rows = await self._read(self._rows_of_session, self._sql.list_sends,
                                [check_id(session_id), from_index])
        return [send_from_row(r) for r in rows]
