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

A cursor is the position after an item: how many messages, send starts and send
finishes come before it, plus a tag of the session's identity (its id and
incarnation), so a cursor of another session, or of an earlier life of this id, is
refused rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from power_loop.errors import InvalidArgumentError
from power_loop.llm.messages import Message, Usage, decode_message
from power_loop.store.core import not_found
from power_loop.store.port import Connection, Row
from power_loop.store.records import check_id, from_us, load_json
from power_loop.store.sends import FINAL_STATUSES

if TYPE_CHECKING:
    from power_loop.store.store import Store

MAX_CURSOR_CHARS = 200
_CURSOR = re.compile(r"f1\.([A-Za-z0-9_-]{1,180})\Z")
_BODY = re.compile(r"(\d{1,19})\.(\d{1,19})\.(\d{1,19})\.([0-9a-f]{16})\Z")
_LIMIT = 2**62


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader is: messages, send starts and send finishes already delivered."""

    messages: int
    started: int
    finished: int
    tag: str

    def encode(self) -> str:
        body = f"{self.messages}.{self.started}.{self.finished}.{self.tag}"
        return "f1." + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


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
    data = match.group(1)
    try:
        body = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise _bad_cursor("malformed") from None
    parts = _BODY.match(body)
    if parts is None:
        raise _bad_cursor("malformed")
    messages, started, finished = (int(parts.group(i)) for i in (1, 2, 3))
    if max(messages, started, finished) >= _LIMIT or not finished <= started <= finished + 1:
        raise _bad_cursor("out of range")
    return Position(messages, started, finished, parts.group(4))


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
        """``message`` or ``send``."""
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


# -- reading ---------------------------------------------------------------------------

SEND_WINDOW = 64
"""Sends read per step: a reader far behind catches up in steps of this many."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read produced, and whether more was already committed."""

    items: list[FeedItem]
    position: Position
    more: bool


class FeedReader:
    """The feed's SQL for one store, rendered once (see :func:`feed_reader`)."""

    def __init__(self, store: Store) -> None:
        d, n = store.database.dialect, store._names
        r = d.render
        self._store = store
        self.session = r(f"SELECT next_seq, send_count, incarnation FROM {n.sessions} "
                         "WHERE id = ?")
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
        return await self._store.read(self._start_txn, session_id, wanted)

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
        next_seq, send_count = int(row[0]), int(row[1])
        if wanted.messages > next_seq or wanted.started > send_count:
            raise _bad_cursor("it is ahead of what the session holds")
        first = max(wanted.finished - 1, 0)
        sends = await conn.fetch(self.sends, [session_id, first, 3])
        if not _fits(wanted, {int(s[0]): s for s in sends}, next_seq, send_count):
            raise _bad_cursor("it does not fall between two of the session's items")
        return wanted

    async def read(self, session_id: str, position: Position, limit: int) -> Batch:
        """The items after ``position`` (at most about ``limit``), from one snapshot.

        Raises:
            SessionNotFoundError: the session was deleted, or replaced by another one
                under the same id (an import, a delete and create).
        """
        return await self._store.read(self._read_txn, session_id, position, limit)

    async def _read_txn(self, conn: Connection, session_id: str, at: Position,
                        limit: int) -> Batch:
        row = await conn.fetchone(self.session, [session_id])
        if row is None or identity_tag(session_id, row[2]) != at.tag:
            raise not_found(session_id)
        next_seq, send_count = int(row[0]), int(row[1])
        if at.messages >= next_seq and at.finished >= send_count:
            return Batch([], at, False)
        send_rows = await conn.fetch(self.sends, [session_id, at.finished, SEND_WINDOW + 1])
        message_rows = (await conn.fetch(self.messages, [session_id, at.messages, limit])
                        if at.messages < next_seq else [])
        return _advance(session_id, at, {int(s[0]): s for s in send_rows},
                        message_rows, next_seq, send_count)


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


def _advance(session_id: str, at: Position, sends: Mapping[int, Row],
             message_rows: Sequence[Row], next_seq: int, send_count: int) -> Batch:
    m, s, f = at.messages, at.started, at.finished
    messages = {int(r[0]): r for r in message_rows}
    items: list[FeedItem] = []

    def cursor() -> str:
        return Position(m, s, f, at.tag).encode()

    while True:
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
    position = Position(m, s, f, at.tag)
    more = (m < next_seq and m not in messages) or (s < send_count and s not in sends) or (
        f < s and f + 1 < send_count and f + 1 not in sends)
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
