"""Durable timers, and the claims workers take on due timers.

A timer is a row: the session it wakes, the message it delivers, when (``due_at``,
database clock), an optional period (``every_us``) and a missed-fire policy. Workers
claim due timers with a lease-with-epoch of their own (``claim_owner``/``claim_epoch``),
using ``FOR UPDATE SKIP LOCKED`` where the engine has it and a compare-and-set update
in every case, on this one table. A recurring timer's next slot follows its schedule,
never the time a worker happened to reach it. (Stranded sends are claimed in
:mod:`power_loop.store.claims`.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from power_loop.errors import CommitInDoubtError, InvalidArgumentError
from power_loop.store.core import StoreCore, ttl_us
from power_loop.store.port import Connection, Listener, Notifying, Row
from power_loop.store.records import (
    check_id,
    dump_json,
    from_us,
    load_json,
    to_us,
)
from power_loop.timers.records import (
    MISSED_POLICIES,
    TIMER_KINDS,
    TIMER_STATUSES,
    TimerClaim,
    TimerRecord,
)

_TIMER_COLUMNS = ("timer_id, session_id, message, status, due_at, every_us, missed, "
                  "fire_count, attempts, claim_owner, claim_epoch, last_error, created_at, "
                  "updated_at, kind")
_FREE = "(claim_owner IS NULL OR claim_expires_at < {now})"


def _timer(row: Row) -> TimerRecord:
    return TimerRecord(
        row[0], row[1], load_json(row[2]), row[3], from_us(row[4]),
        None if row[5] is None else int(row[5]) / 1_000_000, row[6], int(row[7]),
        int(row[8]), row[9], int(row[10]), None if row[11] is None else load_json(row[11]),
        from_us(row[12]), from_us(row[13]), row[14])


class TimerStatements:
    """The SQL of timers and their claims, rendered once."""

    def __init__(self, ops: TimerOps) -> None:
        d, n = ops._database.dialect, ops._names
        r, t = d.render, n.timers
        lock = d.for_update(skip_locked=d.supports_skip_locked)
        self.insert = r(
            f"INSERT INTO {t} ({_TIMER_COLUMNS}, claim_expires_at) VALUES "
            "(?, ?, ?, 'scheduled', ?, ?, ?, 0, 0, NULL, 0, NULL, {now}, {now}, ?, NULL)")
        self.now = r("SELECT {now}")
        self.get = r(f"SELECT {_TIMER_COLUMNS} FROM {t} WHERE timer_id = ?")
        self.count_scheduled = r(f"SELECT COUNT(*) FROM {t} WHERE session_id = ? "
                                 "AND status = 'scheduled'")
        order = "ORDER BY due_at, timer_id LIMIT ?"
        self.listing = {  # by (session given, status given)
            (False, False): r(f"SELECT {_TIMER_COLUMNS} FROM {t} {order}"),
            (False, True): r(f"SELECT {_TIMER_COLUMNS} FROM {t} WHERE status = ? {order}"),
            (True, False): r(f"SELECT {_TIMER_COLUMNS} FROM {t} WHERE session_id = ? {order}"),
            (True, True): r(f"SELECT {_TIMER_COLUMNS} FROM {t} WHERE session_id = ? "
                            f"AND status = ? {order}"),
        }
        self.notify = None if d.notify_sql is None else r(d.notify_sql)
        self.unpark = r(f"UPDATE {t} SET status = 'scheduled', attempts = 0, "
                        "claim_owner = NULL, claim_expires_at = NULL, updated_at = {now} "
                        "WHERE timer_id = ? AND status = 'parked'")
        self.cancel = r(f"UPDATE {t} SET status = 'cancelled', updated_at = {{now}} "
                        "WHERE timer_id = ? AND status IN ('scheduled', 'parked')")
        self.cancel_in = r(f"UPDATE {t} SET status = 'cancelled', updated_at = {{now}} "
                           "WHERE timer_id = ? AND session_id = ? "
                           "AND status IN ('scheduled', 'parked')")
        self.due = r(f"SELECT timer_id FROM {t} WHERE status = 'scheduled' AND "
                     f"due_at <= {{now}} AND {_FREE} ORDER BY due_at LIMIT ?{lock}")
        self.claim = r(
            f"UPDATE {t} SET claim_epoch = claim_epoch + 1, claim_owner = ?, "
            "claim_expires_at = {now} + ?, attempts = attempts + 1, updated_at = {now} "
            f"WHERE timer_id = ? AND status = 'scheduled' AND due_at <= {{now}} AND {_FREE}")
        self.claimed = r(f"SELECT {_TIMER_COLUMNS}, {{now}} - due_at FROM {t} "
                         "WHERE timer_id = ?")
        # A claimed timer is not due for others before its claim runs out.
        self.next_due = r(
            "SELECT MIN(CASE WHEN claim_expires_at > due_at THEN claim_expires_at "
            f"ELSE due_at END) - {{now}} FROM {t} WHERE status = 'scheduled'")
        self.held = r(f"SELECT due_at, every_us, {{now}} FROM {t} WHERE timer_id = ? AND "
                      f"claim_owner = ? AND claim_epoch = ?{d.for_update()}")
        self.renew = r(f"UPDATE {t} SET claim_expires_at = {{now}} + ? WHERE timer_id = ? "
                       "AND claim_owner = ? AND claim_epoch = ?")
        self.advance = r(
            f"UPDATE {t} SET status = ?, due_at = ?, fire_count = fire_count + ?, "
            "attempts = 0, last_error = NULL, claim_owner = NULL, claim_expires_at = NULL, "
            "updated_at = {now} WHERE timer_id = ? AND claim_owner = ? AND claim_epoch = ? "
            "AND status = 'scheduled'")
        self.release = r(
            f"UPDATE {t} SET claim_owner = NULL, claim_expires_at = NULL, last_error = ?, "
            "updated_at = {now} WHERE timer_id = ? AND claim_owner = ? AND claim_epoch = ?")
        # Held back, not failed: the claim ends (a new epoch) but nobody may take the
        # timer up before the delay, and the attempt its claim counted is given back.
        self.defer = r(
            f"UPDATE {t} SET claim_epoch = claim_epoch + 1, claim_expires_at = {{now}} + ?, "
            "attempts = attempts - 1, last_error = ?, updated_at = {now} "
            "WHERE timer_id = ? AND claim_owner = ? AND claim_epoch = ?")
        self.park = r(
            f"UPDATE {t} SET status = 'parked', claim_owner = NULL, claim_expires_at = NULL, "
            "last_error = ?, updated_at = {now} WHERE timer_id = ? AND claim_owner = ? "
            "AND claim_epoch = ?")

class TimerOps(StoreCore):
    """Timers and their claims (mixed into :class:`~power_loop.Store`)."""

    def __init__(self, db: Any, table_prefix: str, *, retries: int = 8) -> None:
        super().__init__(db, table_prefix, retries=retries)
        self._tsql = TimerStatements(self)
        self._hearers: list[Callable[[float], None]] = []

    # -- scheduling --------------------------------------------------------------------

    async def schedule_timer(self, session_id: str, message: str, *,
                             at: datetime | None = None, delay: float | None = None,
                             every: float | None = None, missed: str = "fire_once",
                             timer_id: str | None = None, epoch: int | None = None,
                             max_scheduled: int | None = None,
                             kind: str = "deliver") -> TimerRecord:
        """Schedule ``message`` for ``session_id`` at ``at`` or after ``delay`` seconds.

        Scheduling again with a ``timer_id`` that exists returns that timer unchanged.

        Args:
            every: Repeat every this many seconds (``None``: once).
            missed: ``fire_once`` or ``skip`` (see :class:`TimerRecord`).
            epoch: Fence the write with the session lease (an agent scheduling its own
                wake-up during a send).
            max_scheduled: Refuse when the session already has this many scheduled.
            kind: ``deliver`` or ``expiry`` (see :class:`TimerRecord`).
        """
        check_id(session_id)
        if not isinstance(message, str) or not message:
            raise InvalidArgumentError("a timer needs a non-empty message")
        if (at is None) == (delay is None):
            raise InvalidArgumentError("schedule with exactly one of at= or delay=")
        if delay is not None and not 0 <= delay <= 10 * 366 * 86_400:
            raise InvalidArgumentError(f"delay must be 0 to ten years in seconds, not {delay!r}")
        if every is not None and not 0.001 <= every <= 10 * 366 * 86_400:
            raise InvalidArgumentError(f"every must be a positive number of seconds, not {every!r}")
        if missed not in MISSED_POLICIES:
            raise InvalidArgumentError(f"missed must be one of {sorted(MISSED_POLICIES)}")
        if kind not in TIMER_KINDS:
            raise InvalidArgumentError(f"kind must be one of {sorted(TIMER_KINDS)}")
        tid = uuid.uuid4().hex if timer_id is None else check_id(timer_id, "timer_id")
        timer = await self._write(
            self._schedule_txn, session_id, message, tid,
            None if at is None else to_us(at), None if delay is None else int(delay * 1e6),
            None if every is None else int(every * 1e6), missed, epoch, max_scheduled, kind)
        if self._hearers:  # the host's clock: only decides whether to wake a worker
            self._tell_hearers((at - datetime.now(UTC)).total_seconds() if at is not None
                               else float(delay or 0.0))
        return timer

    async def _schedule_txn(self, conn: Connection, session_id: str, message: str, tid: str,
                            at_us: int | None, delay_us: int | None, every_us: int | None,
                            missed: str, epoch: int | None,
                            max_scheduled: int | None, kind: str = "deliver") -> TimerRecord:
        if epoch is not None:
            await self._update_session(conn, self._sql.touch, session_id, [], epoch=epoch)
        else:
            await self._require_session(conn, session_id)
        existing = await conn.fetchone(self._tsql.get, [tid])
        if existing is not None:
            if existing[1] != session_id:
                raise InvalidArgumentError(f"timer {tid!r} belongs to another session")
            return _timer(existing)  # the same id again: already scheduled, nothing new
        if max_scheduled is not None:
            row = await conn.fetchone(self._tsql.count_scheduled, [session_id])
            if row is not None and int(row[0]) >= max_scheduled:
                raise InvalidArgumentError(
                    f"session {session_id!r} already has {int(row[0])} scheduled timers "
                    f"(the most allowed is {max_scheduled}); cancel one first")
        if at_us is None:
            now = await conn.fetchone(self._tsql.now)
            assert now is not None and delay_us is not None
            at_us = int(now[0]) + delay_us
        await conn.execute(self._tsql.insert, [tid, session_id, dump_json(message), at_us,
                                               every_us, missed, kind])
        await self._wake_workers(conn, at_us)
        row = await conn.fetchone(self._tsql.get, [tid])
        assert row is not None
        return _timer(row)

    async def cancel_timer(self, timer_id: str, *, session_id: str | None = None) -> bool:
        """Cancel a scheduled (or parked) timer; ``False`` if it was not one."""
        check_id(timer_id, "timer_id")
        if session_id is None:
            return await self._write(_changed, self._tsql.cancel, [timer_id])
        return await self._write(_changed, self._tsql.cancel_in, [timer_id, check_id(session_id)])

    async def get_timer(self, timer_id: str) -> TimerRecord | None:
        row = await self._read(_one, self._tsql.get, [check_id(timer_id, "timer_id")])
        return None if row is None else _timer(row)

    async def list_timers(self, session_id: str | None = None, *, status: str | None = None,
                          limit: int = 1000) -> list[TimerRecord]:
        """Timers of one session, or of every session, soonest first.

        Args:
            status: Only timers with this status (``scheduled``, ``done``, ``cancelled``
                or ``parked``).
            limit: At most this many.
        """
        if status is not None and status not in TIMER_STATUSES:
            raise InvalidArgumentError(
                f"unknown timer status {status!r}; choose from {', '.join(TIMER_STATUSES)}")
        if limit < 1:
            raise InvalidArgumentError("limit must be at least 1")
        args: list[Any] = [] if session_id is None else [check_id(session_id)]
        args += [] if status is None else [status]
        sql = self._tsql.listing[(session_id is not None, status is not None)]
        rows = await self._read(_all, sql, [*args, limit])
        return [_timer(r) for r in rows]

    async def unpark_timer(self, timer_id: str) -> bool:
        """Let workers fire a parked timer again, its attempts from zero (at once if its
        time has passed); ``False`` if it was not parked."""
        changed = await self._write(self._changed_waking, self._tsql.unpark,
                                    [check_id(timer_id, "timer_id")])
        if changed:
            self._tell_hearers(0.0)
        return changed

    # -- waking workers ----------------------------------------------------------------

    @property
    def _timer_channel(self) -> str:
        """The notification channel of this store's timers (its table prefix + timers)."""
        return f"{self.table_prefix}timers"

    async def listen_for_timers(self, callback: Callable[[float], None],
                                lost: Callable[[], None] | None = None) -> Listener:
        """Hear of timers as they are scheduled, unparked or handed back, to wake a
        sleeping worker: ``callback(seconds_until_due)`` runs once each commits, and
        ``lost()`` if the subscription's connection breaks.

        Where the engine can notify other processes (PostgreSQL), every process's
        timers are heard. Elsewhere (SQLite, MySQL) only the timers this store object
        schedules are: enough for a worker running in the application's process, while
        workers in other processes find new timers by polling.

        Returns the subscription: close it when done.
        """
        database = self._database
        if self._tsql.notify is None or not isinstance(database, Notifying):
            self._hearers.append(callback)
            return _LocalListener(self._hearers, callback)

        def heard(payload: str) -> None:
            try:
                until = int(payload) / 1_000_000
            except ValueError:
                return  # not ours: somebody else's NOTIFY on the channel
            callback(until)

        return await database.listen(self._timer_channel, heard, lost)

    def _tell_hearers(self, due_in: float) -> None:
        """Tell this store's own listeners (engines without notifications) that a timer
        falls due in ``due_in`` seconds."""
        for hearer in list(self._hearers):
            hearer(due_in)

    async def _wake_workers(self, conn: Connection, due_us: int) -> None:
        """Tell listening workers, when this transaction commits, that a timer falls
        due at ``due_us`` (0: now)."""
        if self._tsql.notify is not None:
            await conn.execute(self._tsql.notify, [self._timer_channel, due_us])

    async def _changed_waking(self, conn: Connection, sql: str, args: Sequence[Any]) -> bool:
        """Run an update that may make a timer claimable at once; wake workers if so."""
        if await conn.execute(sql, args) == 0:
            return False
        await self._wake_workers(conn, 0)
        return True

    async def next_timer_due(self) -> float | None:
        """Seconds until a scheduled timer can next be claimed: the soonest ``due_at``,
        or for a claimed timer the end of its claim if later (negative: overdue)."""
        row = await self._read(_one, self._tsql.next_due, [])
        return None if row is None or row[0] is None else int(row[0]) / 1_000_000

    # -- worker claims -----------------------------------------------------------------

    async def claim_due_timers(self, owner: str, *, ttl: float, limit: int) -> list[TimerClaim]:
        """Claim up to ``limit`` due timers for ``owner`` (a worker slot)."""
        check_id(owner, "owner")
        taken: list[tuple[str, int]] = []
        try:
            return await self._write(self._claim_due_timers_txn, owner, ttl_us(ttl), limit,
                                     taken)
        except (asyncio.CancelledError, CommitInDoubtError):
            # The caller would not know it holds these claims: give them back (and the
            # attempts they counted), as claim_stranded_sessions does its leases.
            await self._hand_back([(self._tsql.defer, [0, None, timer_id, owner, epoch])
                                   for timer_id, epoch in taken])
            raise

    async def _claim_due_timers_txn(self, conn: Connection, owner: str, ttl: int,
                                    limit: int, taken: list[tuple[str, int]],
                                    ) -> list[TimerClaim]:
        taken.clear()  # an earlier attempt certainly did not commit
        claims = []
        for (timer_id,) in await conn.fetch(self._tsql.due, [limit]):
            if await conn.execute(self._tsql.claim, [owner, ttl, timer_id]):
                row = await conn.fetchone(self._tsql.claimed, [timer_id])
                assert row is not None
                timer = _timer(row)
                taken.append((timer_id, timer.claim_epoch))
                claims.append(TimerClaim(timer, owner, timer.claim_epoch,
                                         max(0.0, int(row[15]) / 1_000_000)))
        return claims

    async def renew_timer_claim(self, claim: TimerClaim, *, ttl: float) -> bool:
        """Extend a timer claim; ``False`` when it was lost."""
        return await self._write(_changed, self._tsql.renew,
                                 [ttl_us(ttl), claim.timer.timer_id, claim.owner, claim.epoch])

    async def advance_timer(self, claim: TimerClaim, *, fired: bool) -> TimerRecord | None:
        """Move a claimed timer past its current slot and release the claim.

        A one-shot timer that fired is done. A recurring one moves to its next slot
        after now, on its own schedule (``due_at + k * every``). Returns the updated
        timer, or ``None`` when the claim was lost (or the timer cancelled meanwhile).
        """
        return await self._write(self._advance_txn, claim, fired)

    async def _advance_txn(self, conn: Connection, claim: TimerClaim,
                           fired: bool) -> TimerRecord | None:
        tid = claim.timer.timer_id
        row = await conn.fetchone(self._tsql.held, [tid, claim.owner, claim.epoch])
        if row is None:
            return None
        due, every, now = int(row[0]), row[1], int(row[2])
        if every is None:
            status, next_due = ("done" if fired else "scheduled"), due
        else:
            period = int(every)
            slots = max(1, (now - due) // period + 1)
            status, next_due = "scheduled", due + slots * period
        changed = await conn.execute(self._tsql.advance, [
            status, next_due, 1 if fired else 0, tid, claim.owner, claim.epoch])
        if not changed:
            return None
        updated = await conn.fetchone(self._tsql.get, [tid])
        return None if updated is None else _timer(updated)

    async def release_timer_claim(self, claim: TimerClaim,
                                  error: Mapping[str, Any] | None = None) -> bool:
        """Give a claimed timer back undelivered (another worker will retry it)."""
        changed = await self._write(self._changed_waking, self._tsql.release, [
            None if error is None else dump_json(dict(error)), claim.timer.timer_id,
            claim.owner, claim.epoch])
        if changed:
            self._tell_hearers(0.0)
        return changed

    async def defer_timer_claim(self, claim: TimerClaim, *, delay: float,
                                error: Mapping[str, Any]) -> bool:
        """Give a claimed timer back for a reason that is not its own (its session is
        busy, or has a send to finish first): nobody takes it up again before ``delay``
        seconds, and the claim does not count as a failed attempt."""
        return await self._write(_changed, self._tsql.defer, [
            ttl_us(delay), dump_json(dict(error)), claim.timer.timer_id, claim.owner,
            claim.epoch])

    async def park_timer(self, claim: TimerClaim, error: Mapping[str, Any]) -> bool:
        """Stop retrying a timer whose firing keeps failing (status ``parked``)."""
        return await self._write(_changed, self._tsql.park, [
            dump_json(dict(error)), claim.timer.timer_id, claim.owner, claim.epoch])


class _LocalListener:
    """A subscription to one store object's own timers (engines without notifications)."""

    def __init__(self, hearers: list[Callable[[float], None]],
                 callback: Callable[[float], None]) -> None:
        self._hearers, self._callback = hearers, callback

    def alive(self) -> bool:
        return True

    async def close(self) -> None:
        if self._callback in self._hearers:
            self._hearers.remove(self._callback)


async def _changed(conn: Connection, sql: str, args: Sequence[Any]) -> bool:
    return await conn.execute(sql, args) > 0


async def _one(conn: Connection, sql: str, args: Sequence[Any]) -> Row | None:
    return await conn.fetchone(sql, args)


async def _all(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)
