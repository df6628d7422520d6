"""Waits: a send paused on something outside it (a person's approval or answer).

A wait is a row keyed by (session, wait id); for a tool call the wait id is the call's
id. A send that must wait writes a row for every call of the round (the ones a person
must decide, ``waiting``, and the others, ``held`` with them) and releases the session
lease in the same transaction: the send stays pending, and workers, whose claim of
stranded sends skips a pending send with a ``waiting`` row, leave it alone.

A decision is one conditional ``UPDATE ... WHERE status = 'waiting'``: of two processes
deciding at once exactly one changes the row, the other is told it was decided. Before
an approved (or held) call runs, the process holding the session lease moves its row to
``executing`` with another conditional update, so the call runs at most once whatever
crashes. The transaction that stores the call's result moves the row on to ``done``, so
the two commit together: a row still ``executing`` is a call that started and whose
outcome is unknown (its run died mid-call, or the send was cancelled while it ran).

A later workflow ``wait`` reuses the same rows with a kind of its own.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from power_loop.errors import (
    InvalidArgumentError,
    WaitDecidedError,
    WaitNotFoundError,
)
from power_loop.store.port import Connection, Row
from power_loop.store.records import Lease, check_id, dump_json, from_us, load_json

if TYPE_CHECKING:
    from power_loop.store.store import Store

WAIT_KINDS = ("approval", "input", "held")
DECISIONS = {"approved": "approval", "rejected": "approval", "answered": "input",
             "expired": None}
"""Each decision and the kind of wait it applies to (``expired``: any that can expire)."""
MAX_DECISION_CHARS = 100_000
"""The longest reason or answer kept (longer ones are cut, with a marker)."""
_COLUMNS = ("session_id, wait_id, send_index, kind, tool_name, arguments, status, decision, "
            "expires_at, created_at, decided_at")
FEED_KINDS = ("approval", "input")
"""The kinds of wait the session feed shows (a held call is part of its round's wait)."""
RAN = ("executing", "done")
"""The states of an approved or held call after it started."""


@dataclass(frozen=True, slots=True)
class WaitRecord:
    """One thing a send waits on (or waited on).

    Attributes:
        wait_id: What to pass to ``approve``/``reject``/``answer``: the tool call's id.
        send_index: The send that waits.
        kind: ``approval`` (a tool that needs approval), ``input`` (``ask_user``), or
            ``held`` (another call of the same round, run once the round is decided).
        tool_name: The tool the model called.
        arguments: The call's arguments as the model wrote them (a JSON text).
        status: ``waiting``, then ``approved``, ``rejected``, ``answered`` or
            ``expired``. An approved (or held) call becomes ``executing`` when it
            starts and ``done`` when its result is stored; one left ``executing`` was
            cut off mid-call (its outcome is unknown). As a decision, ``executing`` and
            ``done`` are ``approved`` (see :func:`decision_of`).
        decision: The reason of a rejection, or the answer's text.
        expires_at: When an unanswered approval becomes a rejection (``None``: never).
    """

    session_id: str
    wait_id: str
    send_index: int
    kind: str
    tool_name: str
    arguments: str
    status: str
    decision: str | None
    expires_at: datetime | None
    created_at: datetime
    decided_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewWait:
    """A wait to record (see :meth:`Waits.hold_txn`)."""

    wait_id: str
    kind: str
    tool_name: str
    arguments: str
    expires_in: float | None = None
    status: str | None = None
    """``None``: ``waiting`` (``held`` for a held call)."""
    decision: str | None = None


@dataclass(frozen=True, slots=True)
class Decided:
    """What :meth:`Waits.decide` changed.

    Attributes:
        wait: The wait as it is now.
        remaining: Waits of the same send still undecided.
    """

    wait: WaitRecord
    remaining: tuple[WaitRecord, ...]


def decision_of(status: str) -> str:
    """The decision a wait's ``status`` records: ``approved`` for a call that started
    (``executing`` or ``done``), else the status itself."""
    return "approved" if status in RAN else status


def wait_id_for(call_id: str) -> str:
    """The wait id of a tool call: its id, or, for an id the store cannot key on (longer
    than 200 characters, a NUL, not valid text), a digest of it."""
    try:
        return check_id(call_id, "call id")
    except InvalidArgumentError:
        data = call_id.encode("utf-8", "surrogatepass")
        return "call-" + hashlib.sha256(data).hexdigest()[:40]


def _tool_name(name: str) -> str:
    try:
        return check_id(name, "tool name")
    except InvalidArgumentError:
        return "unknown"


def expiry_timer_id(session_id: str, wait_id: str) -> str:
    """The id of the timer that expires a wait: derived, so scheduling it is idempotent."""
    digest = hashlib.sha256(f"{session_id}\x00{wait_id}".encode()).hexdigest()[:40]
    return f"expiry-{digest}"


def _wait(row: Row) -> WaitRecord:
    return WaitRecord(
        row[0], row[1], int(row[2]), row[3], row[4], load_json(row[5]), row[6],
        None if row[7] is None else load_json(row[7]),
        None if row[8] is None else from_us(row[8]), from_us(row[9]),
        None if row[10] is None else from_us(row[10]))


def clip(text: str) -> str:
    if len(text) <= MAX_DECISION_CHARS:
        return text
    marker = f"\n[... cut: {len(text) - MAX_DECISION_CHARS:,} more characters]"
    return text[:MAX_DECISION_CHARS] + marker


class Waits:
    """The waits of one store: ``waits_of(store)``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        d, n = store._database.dialect, store._names
        r, w, s = d.render, n.waits, n.sessions
        fed = f"{_COLUMNS}, opened_event, opened_seq"
        self.insert = r(f"INSERT INTO {w} ({fed}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, {now} + ?, {now}, NULL, ?, ?)")
        self.insert_forever = r(f"INSERT INTO {w} ({fed}) VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?, NULL, {now}, NULL, ?, ?)")
        # The session feed's numbering: bumped under the session row's lock, then read
        # back with the seq the next message will get (see power_loop.store.feed).
        self.bump = r(f"UPDATE {s} SET wait_events = wait_events + ? WHERE id = ?")
        self.counters = r(f"SELECT next_seq, wait_events FROM {s} WHERE id = ?")
        self.of_send = r(f"SELECT {_COLUMNS} FROM {w} WHERE session_id = ? AND "
                         "send_index = ? ORDER BY created_at, wait_id")
        self.one = r(f"SELECT {_COLUMNS} FROM {w} WHERE session_id = ? AND wait_id = ?")
        self.pending = r(f"SELECT pending_send FROM {s} WHERE id = ?")
        self.decide_sql = r(f"UPDATE {w} SET status = ?, decision = ?, decided_at = {{now}}, "
                            "decided_event = ?, decided_seq = ? "
                            "WHERE session_id = ? AND wait_id = ? AND status = 'waiting'")
        self.execute = r(f"UPDATE {w} SET status = 'executing' WHERE session_id = ? AND "
                         "wait_id = ? AND status IN ('approved', 'held')")
        self.finish = r(f"UPDATE {w} SET status = 'done' WHERE session_id = ? AND "
                        "wait_id = ? AND status = 'executing'")
        self.still_waiting = r(f"SELECT {_COLUMNS} FROM {w} WHERE session_id = ? AND "
                               "send_index = ? AND status = 'waiting' "
                               "ORDER BY created_at, wait_id")

    # -- the send's side (under the session lease) ---------------------------------------

    async def of_send_index(self, session_id: str, send_index: int) -> list[WaitRecord]:
        """Every wait of one send, in the order they were recorded."""
        rows = await self._store._read(_all, self.of_send, [check_id(session_id), send_index])
        return [_wait(r) for r in rows]

    async def hold(self, session_id: str, send_index: int, waits: Sequence[NewWait], *,
                   lease: Lease) -> list[WaitRecord]:
        """Record new waits and let the session go, in one transaction fenced by
        ``lease``; return what the send now waits on."""
        return await self._store._write(self._hold_txn, session_id, send_index, waits, lease)

    async def _hold_txn(self, conn: Connection, session_id: str, send_index: int,
                        waits: Sequence[NewWait], lease: Lease) -> list[WaitRecord]:
        store = self._store
        await store._update_session(conn, store._sql.touch, session_id, [], epoch=lease.epoch)
        await self.hold_txn(conn, session_id, send_index, waits)
        await store._release_lease_txn(conn, lease)
        rows = await conn.fetch(self.still_waiting, [session_id, send_index])
        return [_wait(r) for r in rows]

    async def start(self, session_id: str, wait_ids: Sequence[str], *, epoch: int) -> set[str]:
        """Mark approved or held calls as started (fenced by the lease ``epoch``); return
        those that were not started before."""
        return await self._store._write(self._start_txn, session_id, wait_ids, epoch)

    async def _start_txn(self, conn: Connection, session_id: str, wait_ids: Sequence[str],
                         epoch: int) -> set[str]:
        store = self._store
        await store._update_session(conn, store._sql.touch, session_id, [], epoch=epoch)
        return {w for w in wait_ids if await self.start_txn(conn, session_id, w)}

    async def hold_txn(self, conn: Connection, session_id: str, send_index: int,
                       waits: Sequence[NewWait]) -> None:
        """Record new waits (inside the caller's fenced transaction), with their expiry
        timers."""
        store = self._store
        fed = [w for w in waits if w.kind in FEED_KINDS and w.status is None]
        numbered: dict[str, tuple[int | None, int | None]] = {}
        if fed:
            first, at_seq = await self.number_txn(conn, session_id, len(fed))
            numbered = {w.wait_id: (first + i, at_seq) for i, w in enumerate(fed)}
        for new in waits:
            if new.kind not in WAIT_KINDS:
                raise InvalidArgumentError(f"unknown wait kind {new.kind!r}")
            status = new.status or ("held" if new.kind == "held" else "waiting")
            event, seq = numbered.get(new.wait_id, (None, None))
            base = [session_id, check_id(new.wait_id, "wait id"), send_index, new.kind,
                    _tool_name(new.tool_name), dump_json(new.arguments), status,
                    None if new.decision is None else dump_json(clip(new.decision))]
            if new.expires_in is None:
                await conn.execute(self.insert_forever, [*base, event, seq])
                continue
            await conn.execute(self.insert, [*base, int(new.expires_in * 1_000_000), event,
                                             seq])
            await store._schedule_txn(
                conn, session_id, new.wait_id, expiry_timer_id(session_id, new.wait_id),
                None, int(new.expires_in * 1_000_000), None, "fire_once", None, None,
                "expiry")

    async def number_txn(self, conn: Connection, session_id: str, count: int,
                         ) -> tuple[int, int]:
        """Number ``count`` wait events of the session feed: the first number, and the
        seq the session's next message will get (where the feed shows them)."""
        await conn.execute(self.bump, [count, session_id])
        row = await conn.fetchone(self.counters, [session_id])
        assert row is not None  # the caller's transaction holds the session row
        return int(row[1]) - count, int(row[0])

    async def start_txn(self, conn: Connection, session_id: str, wait_id: str) -> bool:
        """Mark an approved or held call as started; ``False`` if it was already (by a
        run that died before recording its result)."""
        return await conn.execute(self.execute, [session_id, wait_id]) > 0

    async def finish_txn(self, conn: Connection, session_id: str,
                         wait_ids: Sequence[str]) -> None:
        """Mark started calls as ``done``: called by the transaction that stores their
        results (fenced by the caller), so a row is ``done`` exactly when its result is
        committed."""
        for wait_id in wait_ids:
            await conn.execute(self.finish, [session_id, wait_id])

    # -- the deciding side (any process) -------------------------------------------------

    async def decide(self, session_id: str, wait_id: str, status: str,
                     decision: str | None = None) -> Decided:
        """Record a decision on a waiting call: exactly one decision wins.

        Raises:
            WaitNotFoundError: the session's pending send waits on no such call.
            WaitDecidedError: the call was decided already (or its send ended).
            InvalidArgumentError: the decision does not fit the wait (``answer`` for an
                approval, ``approve`` for a question).
        """
        check_id(session_id)
        check_id(wait_id, "call_id")
        if status not in DECISIONS:
            raise InvalidArgumentError(f"unknown decision {status!r}")
        if decision is not None and not isinstance(decision, str):
            raise InvalidArgumentError(
                f"a reason or answer must be a string, not {type(decision).__name__}")
        words = None if decision is None else dump_json(clip(decision))
        return await self._store._write(self._decide_txn, session_id, wait_id, status, words)

    async def _decide_txn(self, conn: Connection, session_id: str, wait_id: str, status: str,
                          words: str | None) -> Decided:
        store = self._store
        row = await conn.fetchone(self.one, [session_id, wait_id])
        if row is None or row[3] == "held":
            await store._require_session(conn, session_id)
            raise WaitNotFoundError(
                f"session {session_id!r} is not waiting on a call {wait_id!r}; "
                "`power-loop sessions show` lists what it waits on",
                session_id=session_id, wait_id=wait_id)
        wait = _wait(row)
        fits = DECISIONS[status]
        if fits is not None and wait.kind != fits:
            verb = "answer" if wait.kind == "input" else "approve or reject"
            raise InvalidArgumentError(
                f"call {wait_id!r} of session {session_id!r} waits for "
                f"{'an answer' if wait.kind == 'input' else 'an approval'}: {verb} it")
        pending = await conn.fetchone(self.pending, [session_id])
        current = None if pending is None or pending[0] is None else int(pending[0])
        if wait.status != "waiting" or current != wait.send_index:
            # An approved call that started (or ran) is still, as a decision, approved.
            state = ("abandoned" if wait.status == "waiting"
                     else decision_of(wait.status))
            raise WaitDecidedError(
                f"call {wait_id!r} of session {session_id!r} was already decided "
                f"({state}); nothing was changed", session_id=session_id, wait_id=wait_id,
                status=state)
        # Numbered before the row is decided: the session row is locked first, as the
        # send path does (session, then its waits), so the two never deadlock.
        event, seq = await self.number_txn(conn, session_id, 1)
        if not await conn.execute(self.decide_sql, [status, words, event, seq, session_id,
                                                    wait_id]):
            fresh = await conn.fetchone(self.one, [session_id, wait_id])
            state = "abandoned" if fresh is None else decision_of(str(fresh[6]))
            raise WaitDecidedError(
                f"call {wait_id!r} of session {session_id!r} was decided by another "
                f"process ({state}) at the same moment; nothing was changed",
                session_id=session_id, wait_id=wait_id, status=state)
        if wait.expires_at is not None and status != "expired":
            await conn.execute(store._tsql.cancel, [expiry_timer_id(session_id, wait_id)])
        decided = await conn.fetchone(self.one, [session_id, wait_id])
        assert decided is not None
        rest = await conn.fetch(self.still_waiting, [session_id, wait.send_index])
        return Decided(_wait(decided), tuple(_wait(r) for r in rest))

    async def waiting(self, session_id: str) -> list[WaitRecord]:
        """What the session's pending send waits on (empty when it waits on nothing)."""
        return await self._store._read(self._waiting_txn, check_id(session_id))

    async def _waiting_txn(self, conn: Connection, session_id: str) -> list[WaitRecord]:
        pending = await conn.fetchone(self.pending, [session_id])
        if pending is None:
            await self._store._require_session(conn, session_id)
        if pending is None or pending[0] is None:
            return []
        rows = await conn.fetch(self.still_waiting, [session_id, int(pending[0])])
        return [_wait(r) for r in rows]


_BY_STORE: weakref.WeakKeyDictionary[Any, Waits] = weakref.WeakKeyDictionary()


def waits_of(store: Store) -> Waits:
    """The waits of ``store`` (statements rendered once per store)."""
    found = _BY_STORE.get(store)
    if found is None:
        found = _BY_STORE[store] = Waits(store)
    return found


async def _all(conn: Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return await conn.fetch(sql, args)


def as_mapping(wait: WaitRecord) -> Mapping[str, Any]:
    """A wait as plain JSON values (the CLI's ``--json``)."""
    return {"call_id": wait.wait_id, "send_index": wait.send_index, "kind": wait.kind,
            "tool": wait.tool_name, "arguments": wait.arguments, "status": wait.status,
            "decision": wait.decision,
            "expires_at": None if wait.expires_at is None else wait.expires_at.isoformat()}
