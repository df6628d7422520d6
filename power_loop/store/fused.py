"""The send path's write transactions, each folded into one statement.

On engines with :attr:`~power_loop.store.port.Dialect.supports_writable_cte` (PostgreSQL),
each write of a send is a single statement run on its own, so one round trip commits it:

    WITH s AS (UPDATE sessions SET ... WHERE id = ? AND <condition> [AND <fence>]
               RETURNING ...),
         m AS (INSERT INTO messages ... SELECT ..., s.next_seq - n + u.i - 1, ...
               FROM s, <the messages, as array parameters> u),
         ...
    SELECT <the returned columns> FROM s

It is the statement-by-statement transaction of :mod:`power_loop.store.sends` with the
same session-row update (the same condition, fence and seq arithmetic): every insert and
update that follows selects from ``s``, so when the update matches no row (a stale
epoch, a held lease, a send that is not the pending one, a request key already used)
nothing at all is written and no row comes back; the store then reads why, and raises
what the statement-by-statement form raises. The row lock the update takes is held to
the statement's end, as it is to the transaction's end there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from power_loop.errors import InvalidArgumentError
from power_loop.store.port import ColumnType, Dialect
from power_loop.store.records import NewMessage, check_count, check_name, dump_json
from power_loop.store.schema import TableNames
from power_loop.store.statements import (
    APPEND,
    APPEND_EXTEND,
    BEGIN_SEND,
    FINISH_SEND,
    FINISH_SEND_RELEASE,
    SEND_COLUMNS,
    Statements,
)

_MESSAGE_INSERT = "INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "


@dataclass(frozen=True, slots=True)
class FusedWrite:
    """One fused write in its unfenced and fenced forms (as :class:`SessionUpdate`)."""

    plain: str
    fenced: str


def message_body(message: NewMessage) -> dict[str, Any]:
    """A message's body as a dict, once it is checked to be a :class:`NewMessage`."""
    if not isinstance(message, NewMessage) or not isinstance(message.body, Mapping):
        raise InvalidArgumentError(
            f"messages must be NewMessage(send_index, role, body) with a mapping body, not "
            f"{message!r:.80}")
    return dict(message.body)


def message_arrays(messages: Sequence[NewMessage],
                   send_index: int | None = None) -> tuple[list[int], list[str], list[str]]:
    """The messages as parallel lists (send indexes, roles, JSON bodies), checked as
    :meth:`StoreCore._insert_messages` checks them (``send_index`` overrides theirs)."""
    indexes: list[int] = []
    roles: list[str] = []
    bodies: list[str] = []
    for msg in messages:
        body = message_body(msg)
        index = msg.send_index if send_index is None else send_index
        check_count(index, "send_index")
        indexes.append(index)
        roles.append(check_name(msg.role, "role"))
        bodies.append(dump_json(body))
    return indexes, roles, bodies


class FusedStatements:
    """The fused statements for one dialect and prefix, rendered once.

    Each ``*_args`` method lays the arguments out in the order of its statement's ``?``.
    """

    def __init__(self, sql: Statements, dialect: Dialect, names: TableNames) -> None:
        d, r = dialect, dialect.render
        m, sd = names.messages, names.sends
        id_, big = (f"CAST(? AS {d.column_type(k)})" for k in (ColumnType.ID, ColumnType.BIGINT))
        name = f"CAST(? AS {d.column_type(ColumnType.NAME)})"
        insert = _MESSAGE_INSERT.format(m=m)
        text = [("role", ColumnType.NAME), ("body", ColumnType.JSON)]

        def update(spec: tuple[str, str, str], where: str = "", *, fenced: bool) -> str:
            assign, condition, returning = spec
            return (f"WITH s AS ({sql.update_text(assign, condition + where, fenced=fenced)} "
                    f"RETURNING {returning})")

        # begin_send: args: the update's, [session id, key,] session id, source, key,
        # message count, session id, message count, roles, bodies.
        keyed = f" AND NOT EXISTS (SELECT 1 FROM {sd} WHERE session_id = ? AND request_key = ?)"
        begin_tail = (
            f", d AS (INSERT INTO {sd} ({SEND_COLUMNS}) SELECT {id_}, s.send_count - 1, "
            f"'pending', {name}, {id_}, s.next_seq - ?, {{now}}, NULL, NULL, 0, '{{}}', NULL "
            f"FROM s), m AS ({insert}SELECT {id_}, s.next_seq - ? + u.i - 1, "
            f"s.send_count - 1, u.role, u.body, {{now}} FROM s, {d.array_rows('u', text)}) "
            f"SELECT {BEGIN_SEND[2]} FROM s")
        self.begin_send = r(update(BEGIN_SEND, fenced=False) + begin_tail)
        self.begin_send_keyed = r(update(BEGIN_SEND, keyed, fenced=False) + begin_tail)

        # append: args: the update's, session id, message count, indexes, roles, bodies.
        rows = d.array_rows("u", [("send_index", ColumnType.BIGINT), *text])
        append_tail = (f", m AS ({insert}SELECT {id_}, s.next_seq - ? + u.i - 1, "
                       f"u.send_index, u.role, u.body, {{now}} FROM s, {rows}) "
                       "SELECT next_seq FROM s")
        self.append = FusedWrite(r(update(APPEND, fenced=False) + append_tail),
                                 r(update(APPEND, fenced=True) + append_tail))
        self.append_extend = FusedWrite(r(update(APPEND_EXTEND, fenced=False) + append_tail),
                                        r(update(APPEND_EXTEND, fenced=True) + append_tail))

        # finish: args: the update's, the outcome (status, stop reason, rounds, usage,
        # error), session id, send index, then session id, message count, send index,
        # roles, bodies, then session id and the projections' indexes, versions, bodies.
        projections = d.upsert(
            names.raw("projections"), ("session_id", "send_index", "version", "body",
                                       "created_at"),
            ("session_id", "send_index"), ("version", "body", "created_at"),
            source=(f"SELECT {id_}, p.send_index, p.version, p.body, {{now}} FROM s, "
                    + d.array_rows("p", [("send_index", ColumnType.BIGINT),
                                         ("version", ColumnType.INT),
                                         ("body", ColumnType.JSON)])))
        finish_tail = (
            f", e AS (UPDATE {sd} SET status = ?, finished_at = {{now}}, stop_reason = ?, "
            "rounds = ?, token_usage = ?, error = ? WHERE session_id = ? AND send_index = ? "
            f"AND EXISTS (SELECT 1 FROM s)), m AS ({insert}SELECT {id_}, "
            f"s.next_seq - ? + u.i - 1, {big}, u.role, u.body, {{now}} FROM s, "
            f"{d.array_rows('u', text)}), p AS ({projections}) SELECT next_seq FROM s")
        self.finish = FusedWrite(r(update(FINISH_SEND, fenced=False) + finish_tail),
                                 r(update(FINISH_SEND, fenced=True) + finish_tail))
        self.finish_release = FusedWrite(
            r(update(FINISH_SEND_RELEASE, fenced=False) + finish_tail),
            r(update(FINISH_SEND_RELEASE, fenced=True) + finish_tail))

    @staticmethod
    def begin_send_args(session_id: str, owner: str, ttl: int, source: str,
                        request_key: str | None, messages: Sequence[NewMessage]) -> list[Any]:
        _, roles, bodies = message_arrays(messages, 0)
        n = len(messages)
        keyed: list[Any] = [] if request_key is None else [session_id, request_key]
        return [owner, ttl, n, session_id, *keyed, session_id, source, request_key, n,
                session_id, n, roles, bodies]

    @staticmethod
    def append_args(update: Sequence[Any], session_id: str,
                    messages: Sequence[NewMessage]) -> list[Any]:
        indexes, roles, bodies = message_arrays(messages)
        return [*update, session_id, len(messages), indexes, roles, bodies]

    @staticmethod
    def finish_args(update: Sequence[Any], outcome: Sequence[Any], session_id: str,
                    send_index: int, messages: Sequence[NewMessage],
                    projections: tuple[list[int], list[int], list[str]]) -> list[Any]:
        _, roles, bodies = message_arrays(messages, send_index)
        return [*update, *outcome, session_id, send_index, session_id, len(messages),
                send_index, roles, bodies, session_id, *projections]
