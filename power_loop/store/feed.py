"""The session feed's order and cursors: what a session committed, as one sequence.

Nothing is written for the feed: its order is derived from what the send path already
commits, so no write statement changes and every process derives the same order.

* Messages are append-only and numbered by ``seq`` (contiguous from 0), handed out by
  the session-row update of the transaction that commits them.
* A send is opened in the transaction that commits its first message (``first_seq``)
  and closed, at most once, in the transaction that commits its last ones; a session has
  at most one open send, so the messages from a send's ``first_seq`` up to the next
  send's ``first_seq`` (or the end) are that send's.

The feed is therefore: the send's *start* (its status ``pending``), its messages, its
*finish* (its final status), the next send's start, and so on; messages appended outside
any send (only the raw :meth:`~power_loop.Store.append_messages` can) sit at their seq.
That order is the commit order, whichever processes committed.

Waits (schema version 8) are the one thing written for the feed: the transaction that
opens a wait (an approval or a question) or decides one bumps the session's
``wait_events`` counter, under the session row's lock, and records on the wait's row
the event's number and the seq the session's next message will get then. A wait event
numbered at seq ``q`` comes after message ``q - 1`` and before whatever else sits at
``q`` (a send's finish, the next send's start, message ``q``): it was committed before
them, since a send's waits are opened and decided while it is pending, after its
first message.

A cursor is the position after an item: how many messages, send starts, send
finishes and wait events come before it, plus a tag of the session's identity (its id
and incarnation), so a cursor of another session, or of an earlier life of this id, is
refused rather than misread. Cursors of the first format (``f1.``, before waits were in
the feed) are still read: as having seen the wait events before their message
position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError
from power_loop.llm.messages import Message, Usage, decode_message
from power_loop.store.core import not_found
from power_loop.store.port import Connection, Row
from power_loop.store.records import check_id, from_us, load_json
from power_loop.store.sends import FINAL_STATUSES
from power_loop.store.waits import decision_of

if TYPE_CHECKING:
    from power_loop.store.store import Store

MAX_CURSOR_CHARS = 200
_CURSOR = re.compile(r"f([12])\.([A-Za-z0-9_-]{1,180})\Z")
_BODY = {"1": re.compile(r"(\d{1,19})\.(\d{1,19})\.(\d{1,19})\.()([0-9a-f]{16})\Z"),
         "2": re.compile(r"(\d{1,19})\.(\d{1,19})\.(\d{1,19})\.(\d{1,19})\.([0-9a-f]{16})\Z")}
_LIMIT = 2**62


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader is: messages, send starts, send finishes and wait events already
    delivered (``waits`` is -1 for a first-format cursor, until it is resolved)."""

    messages: int
    started: int
    finished: int
    tag: str
    waits: int = 0

    def encode(self) -> str:
        body = f"{self.messages}.{self.started}.{self.finished}.{self.waits}.{self.tag}"
        return "f2." + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def identity_tag(session_id: str, incarnation: str) -> str:
    """A short digest of which session (and which life of its id) a cursor belongs to."""
    data = f"{session_id}\x00{incarnation}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:16]


def _bad_cursor(why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"cursor is not one this feed handed out ({why}); pass the `cursor` of the last "
        "item the client saw, or after=None to start from the beginning")


def decode_cursor(cursor: object) -> Position:
    """Parse a cursor's text; its fit to the session is checked against the store."""
    if not isinstance(cursor, str):
        raise _bad_cursor(f"a {type(cursor).__name__}, not a string")
    match = _CURSOR.match(cursor) if len(cursor) <= MAX_CURSOR_CHARS else None
    if match is None:
        raise _bad_cursor("malformed")
    version, data = match.group(1), match.group(2)
    try:
        body = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise _bad_cursor("malformed") from None
    parts = _BODY[version].match(body)
    if parts is None:
        raise _bad_cursor("malformed")
    messages, started, finished = (int(parts.group(i)) for i in (1, 2, 3))
    waits = int(parts.group(4)) if version == "2" else -1
    if max(messages, started, finished, waits) >= _LIMIT or not (
            finished <= started <= finished + 1):
        raise _bad_cursor("out of range")
    return Position(messages, started, finished, parts.group(5), waits)


# -- the items -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedItem:
    """One thing a session committed, as :meth:`~power_loop.StatefulAgentLoop.watch`
    yields it.

    Attributes:
        session_id: The session.
        send_index: The send it belongs to.
        cursor: The position just after this item: pass it as ``after=`` to go on from
            here, in this process or any other.
    """

    session_id: str
    send_index: int
    cursor: str

    @property
    def kind(self) -> str:
        """``message``, ``send`` or ``wait``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedMessage(FeedItem):
    """A committed message.

    Attributes:
        seq: Its place in the session (contiguous from 0).
        message: The message, decoded.
        created_at: When it was committed (database clock).
    """

    seq: int
    message: Message
    created_at: datetime

    @property
    def kind(self) -> str:
        return "message"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedSend(FeedItem):
    """A send's status change: its start (``pending``) or its end (its final status).

    Attributes:
        status: ``pending`` at the start; ``done``, ``failed``, ``cancelled`` or
            ``aborted`` at the end.
        source: Who started it (``user``, ``timer``...).
        stop_reason: Why it stopped (at the end).
        rounds: Model answers it stored (at the end; 0 at the start).
        usage: Tokens it spent (at the end; zero at the start).
        error: What stopped it, if it ended on an error.
        at: When it started, or when it ended (database clock).
    """

    status: str
    source: str
    stop_reason: str | None = None
    rounds: int = 0
    usage: Usage = field(default_factory=Usage)
    error: Mapping[str, Any] | None = None
    at: datetime

    @property
    def kind(self) -> str:
        return "send"

    @property
    def finished(self) -> bool:
        """Whether this is the send's end."""
        return self.status != "pending"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedWait(FeedItem):
    """A wait opened (``status`` ``waiting``) or decided: a tool call waiting for a
    person's approval, or an ``ask_user`` question waiting for an answer.

    Attributes:
        wait_id: The call's id: what ``approve``, ``reject`` and ``answer`` take.
        waits_for: ``approval`` or ``input`` (an answer).
        tool_name: The tool the model called (``ask_user`` for a question).
        arguments: The call's arguments as the model wrote them (a JSON text).
        status: ``waiting`` when it opens; ``approved``, ``rejected``, ``answered`` or
            ``expired`` when it is decided.
        decision: A rejection's reason or the answer's text (when decided).
        expires_at: When an unanswered approval expires (``None``: never).
        at: When it opened, or when it was decided (database clock).
    """

    wait_id: str
    waits_for: str
    tool_name: str
    arguments: str
    status: str
    decision: str | None = None
    expires_at: datetime | None = None
    at: datetime

    @property
    def kind(self) -> str:
        return "wait"

    @property
    def decided(self) -> bool:
        """Whether this is the wait's decision (else its opening)."""
        return self.status != "waiting"


# -- reading ---------------------------------------------------------------------------

SEND_WINDOW = 64
"""Sends read per step: a reader far behind catches up in steps of this many."""
WAIT_WINDOW = 64
"""Wait events read per step."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read produced, and whether more was already committed."""

    items: list[FeedItem]
    position: Position
    more: bool


class FeedReader:
    """The feed's SQL for one store, rendered once (see :func:`feed_reader`)."""

    def __init__(self, store: Store) -> None:
        d, n = store._database.dialect, store._names
        r = d.render
        self._store = store
        self.session = r(f"SELECT next_seq, send_count, incarnation, wait_events FROM "
                         f"{n.sessions} WHERE id = ?")
        self.waits = r(
            "SELECT wait_id, send_index, kind, tool_name, arguments, status, decision, "
            "expires_at, created_at, decided_at, opened_event, opened_seq, decided_event, "
            f"decided_seq FROM {n.waits} WHERE session_id = ? AND ("
            "(opened_event >= ? AND opened_event < ?) OR "
            "(decided_event >= ? AND decided_event < ?))")
        self.waits_before = r(
            "SELECT SUM(CASE WHEN opened_event < ? AND opened_seq < ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN decided_event < ? AND decided_seq < ? THEN 1 ELSE 0 END) "
            f"FROM {n.waits} WHERE session_id = ?")
        self.sends = r(
            "SELECT send_index, status, source, first_seq, created_at, finished_at, "
            f"stop_reason, rounds, token_usage, error FROM {n.sends} "
            "WHERE session_id = ? AND send_index >= ? ORDER BY send_index LIMIT ?")
        self.messages = r(
            f"SELECT seq, send_index, role, body, created_at FROM {n.messages} "
            "WHERE session_id = ? AND seq >= ? ORDER BY seq LIMIT ?")

    async def start(self, session_id: str, after: str | None) -> Position:
        """The position to read from: the beginning, or ``after`` checked against the
        session as it is now."""
        check_id(session_id)
        wanted = None if after is None else decode_cursor(after)
        return await self._store._read(self._start_txn, session_id, wanted)

    async def _start_txn(self, conn: Connection, session_id: str,
                         wanted: Position | None) -> Position:
        row = await conn.fetchone(self.session, [session_id])
        if row is None:
            raise not_found(session_id)
        tag = identity_tag(session_id, row[2])
        if wanted is None:
            return Position(0, 0, 0, tag)
        if wanted.tag != tag:
            raise _bad_cursor("it belongs to another session, or to an earlier session "
                              "that had this id")
        next_seq, send_count, wait_count = int(row[0]), int(row[1]), int(row[3])
        if wanted.messages > next_seq or wanted.started > send_count or (
                wanted.waits > wait_count):
            raise _bad_cursor("it is ahead of what the session holds")
        first = max(wanted.finished - 1, 0)
        sends = {int(s[0]): s for s in await conn.fetch(self.sends, [session_id, first, 3])}
        if not _fits(wanted, sends, next_seq, send_count):
            raise _bad_cursor("it does not fall between two of the session's items")
        m = wanted.messages
        if wanted.waits < 0:  # a first-format cursor: it saw what came before message m
            counted = await conn.fetchone(self.waits_before,
                                          [wait_count, m, wait_count, m, session_id])
            assert counted is not None  # an aggregate: always one row
            return replace(wanted, waits=int(counted[0] or 0) + int(counted[1] or 0))
        w = wanted.waits
        seqs = _wait_seqs(await conn.fetch(self.waits, [session_id, max(w - 1, 0), w + 1,
                                                        max(w - 1, 0), w + 1]))
        if w > 0 and not seqs.get(w - 1, m + 1) <= m:
            raise _bad_cursor("it does not fall between two of the session's items")
        if w < wait_count:
            upcoming = seqs.get(w, -1)
            if upcoming < m or (upcoming == m and _past_others_at(wanted, sends, m)):
                raise _bad_cursor("it does not fall between two of the session's items")
        return wanted

    async def read(self, session_id: str, position: Position, limit: int) -> Batch:
        """The items after ``position`` (at most about ``limit``), from one snapshot.

        Raises:
            SessionNotFoundError: the session was deleted, or replaced by another one
                under the same id (an import, a delete and create).
        """
        return await self._store._read(self._read_txn, session_id, position, limit)

    async def _read_txn(self, conn: Connection, session_id: str, at: Position,
                        limit: int) -> Batch:
        row = await conn.fetchone(self.session, [session_id])
        if row is None or identity_tag(session_id, row[2]) != at.tag:
            raise not_found(session_id)
        next_seq, send_count, wait_count = int(row[0]), int(row[1]), int(row[3])
        if at.messages >= next_seq and at.finished >= send_count and at.waits >= wait_count:
            return Batch([], at, False)
        send_rows = await conn.fetch(self.sends, [session_id, at.finished, SEND_WINDOW + 1])
        message_rows = (await conn.fetch(self.messages, [session_id, at.messages, limit])
                        if at.messages < next_seq else [])
        waits: dict[int, tuple[int, FeedWait]] = {}
        if at.waits < wait_count:
            end = min(wait_count, at.waits + WAIT_WINDOW)
            rows = await conn.fetch(self.waits, [session_id, at.waits, end, at.waits, end])
            waits = _wait_events(session_id, rows, at.waits, end)
        return _advance(session_id, at, {int(s[0]): s for s in send_rows},
                        message_rows, next_seq, send_count, waits, wait_count)


def _end(sends: Mapping[int, Row], index: int, next_seq: int, send_count: int) -> int | None:
    """Where send ``index``'s messages end: the next send's first seq (``None`` when
    that send was not read), or the session's end for the last send."""
    if index + 1 >= send_count:
        return next_seq
    following = sends.get(index + 1)
    return None if following is None else int(following[3])


def _fits(at: Position, sends: Mapping[int, Row], next_seq: int, send_count: int) -> bool:
    """Whether ``at`` is the position after some prefix of the feed."""
    m, s, f = at.messages, at.started, at.finished
    if f >= 1:
        before = sends.get(f - 1)
        end = _end(sends, f - 1, next_seq, send_count)
        if before is None or before[1] not in FINAL_STATUSES or end is None or m < end:
            return False
    if s == f + 1:  # send f started and not yet finished for this reader
        current = sends.get(f)
        end = _end(sends, f, next_seq, send_count)
        return current is not None and end is not None and int(current[3]) <= m <= end
    if f < send_count:  # between a finish (or the beginning) and the next start
        upcoming = sends.get(f)
        return upcoming is not None and m <= int(upcoming[3])
    return True


def _wait_seqs(rows: Sequence[Row]) -> dict[int, int]:
    """Wait event number -> the seq it sits at, for the events in ``rows``."""
    seqs: dict[int, int] = {}
    for row in rows:
        if row[10] is not None:
            seqs[int(row[10])] = int(row[11])
        if row[12] is not None:
            seqs[int(row[12])] = int(row[13])
    return seqs


def _past_others_at(at: Position, sends: Mapping[int, Row], m: int) -> bool:
    """Whether ``at`` delivered a send's start or finish that sits at seq ``m`` (the
    wait events at ``m`` come before those)."""
    started = sends.get(at.started - 1) if at.started >= 1 else None
    if started is not None and int(started[3]) == m:
        return True
    # Between a finish and the next start, a position is where that finish sits.
    return at.finished >= 1 and at.started == at.finished


def _wait_events(session_id: str, rows: Sequence[Row], first: int, end: int,
                 ) -> dict[int, tuple[int, FeedWait]]:
    """Wait event number -> (its seq, the item without its cursor), for ``first <=
    number < end``."""
    events: dict[int, tuple[int, FeedWait]] = {}
    for row in rows:
        base = {"session_id": session_id, "send_index": int(row[1]), "cursor": "",
                "wait_id": row[0], "waits_for": row[2], "tool_name": row[3],
                "arguments": load_json(row[4]),
                "expires_at": None if row[7] is None else from_us(row[7])}
        if row[10] is not None and first <= int(row[10]) < end:
            events[int(row[10])] = (int(row[11]), FeedWait(
                **base, status="waiting", at=from_us(row[8])))
        if row[12] is not None and first <= int(row[12]) < end:
            status = decision_of(str(row[5]))
            events[int(row[12])] = (int(row[13]), FeedWait(
                **base, status=status, decision=None if row[6] is None else load_json(row[6]),
                at=from_us(row[9] if row[9] is not None else row[8])))
    return events


def _advance(session_id: str, at: Position, sends: Mapping[int, Row],
             message_rows: Sequence[Row], next_seq: int, send_count: int,
             waits: Mapping[int, tuple[int, FeedWait]], wait_count: int) -> Batch:
    m, s, f, w = at.messages, at.started, at.finished, at.waits
    messages = {int(r[0]): r for r in message_rows}
    items: list[FeedItem] = []

    def cursor() -> str:
        return Position(m, s, f, at.tag, w).encode()

    while True:
        if w < wait_count:
            waiting = waits.get(w)
            if waiting is None:
                break  # beyond the wait events read this time
            if waiting[0] <= m:  # it sits here: before anything else at m
                w += 1
                items.append(replace(waiting[1], cursor=cursor()))
                continue
        if f < s:  # send f is open for this reader
            end = _end(sends, f, next_seq, send_count)
            if end is None:
                break
            if m < end:
                if m not in messages:
                    break
                row = messages[m]
                m += 1
                items.append(_message_item(session_id, row, cursor()))
                continue
            send = sends[f]
            if send[1] not in FINAL_STATUSES:
                break  # its messages so far are delivered; it is still running
            f += 1
            items.append(_finish_item(session_id, send, cursor()))
            continue
        upcoming = sends.get(s) if s < send_count else None
        if s < send_count and upcoming is None:
            break  # beyond the sends read this time
        if upcoming is not None and m == int(upcoming[3]):
            s += 1
            items.append(_start_item(session_id, upcoming, cursor()))
            continue
        if m < next_seq and m in messages:
            row = messages[m]
            m += 1
            items.append(_message_item(session_id, row, cursor()))
            continue
        break
    position = Position(m, s, f, at.tag, w)
    more = (m < next_seq and m not in messages) or (s < send_count and s not in sends) or (
        f < s and f + 1 < send_count and f + 1 not in sends) or (
        w < wait_count and w not in waits)
    return Batch(items, position, bool(more))


def _message_item(session_id: str, row: Row, cursor: str) -> FeedMessage:
    return FeedMessage(session_id=session_id, send_index=int(row[1]), cursor=cursor,
                       seq=int(row[0]), message=decode_message(row[2], load_json(row[3])),
                       created_at=from_us(row[4]))


def _start_item(session_id: str, send: Row, cursor: str) -> FeedSend:
    return FeedSend(session_id=session_id, send_index=int(send[0]), cursor=cursor,
                    status="pending", source=send[2], at=from_us(send[4]))


def _finish_item(session_id: str, send: Row, cursor: str) -> FeedSend:
    usage = load_json(send[8])
    return FeedSend(session_id=session_id, send_index=int(send[0]), cursor=cursor,
                    status=send[1], source=send[2], stop_reason=send[6],
                    rounds=int(send[7]), usage=Usage.from_json(usage),
                    error=None if send[9] is None else load_json(send[9]),
                    at=from_us(send[5] if send[5] is not None else send[4]))


_READERS: weakref.WeakKeyDictionary[Store, FeedReader] = weakref.WeakKeyDictionary()


def feed_reader(store: Store) -> FeedReader:
    """The store's feed reader (its statements are rendered once per store)."""
    reader = _READERS.get(store)
    if reader is None:
        reader = _READERS[store] = FeedReader(store)
    return reader
