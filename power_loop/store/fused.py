"""The send path's write transactions, each sent in one round trip.

:func:`fused_writes` picks the form the engine allows: :class:`CTEWrites` here, one
statement each, on engines with
:attr:`~power_loop.store.port.Dialect.supports_writable_cte` (PostgreSQL);
:class:`~power_loop.store.scripted.ScriptWrites`, one multi-statement text each, on
engines with :attr:`~power_loop.store.port.Dialect.supports_multi_statements` (MySQL);
none on SQLite, whose statements run inline (no round trips to save). The loop's writes
(:meth:`Store.begin_send`, :meth:`Store.append_messages`, :meth:`Store.close_send`)
take the fused form when there is one. On PostgreSQL each is a single statement run on
its own, so one round trip commits it:

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
from typing import Any, Protocol

from power_loop.errors import InvalidArgumentError
from power_loop.store.port import ColumnType, Dialect
from power_loop.store.records import NewMessage, check_count, check_name, dump_json
from power_loop.store.schema import TableNames
from power_loop.store.statements import (
    APPEND,
    APPEND_EXTEND,
    BEGIN_SEND,
    EXPECT_SEQ,
    FINISH_SEND_RELEASE,
    SEND_COLUMNS,
    Statements,
)

_MESSAGE_INSERT = "INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "


Fused = tuple[str, list[Any]]
"""A fused write: its SQL and its arguments."""

Projections = Sequence[tuple[int, int, Mapping[str, Any]]]
"""(send index, version, body) of each projection a send's end writes."""


def message_body(message: NewMessage) -> dict[str, Any]:
    """A message's body as a dict, once it is checked to be a :class:`NewMessage`."""
    if type(message) is NewMessage and type(message.body) is dict:
        return message.body  # encoded at once: a copy would only be thrown away
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


class FusedWrites(Protocol):
    """The send path's writes, each as one text sent in one round trip."""

    rollback_on_error: bool
    """A failed text may leave its transaction open: send ``ROLLBACK`` after it."""

    def begin_send(self, session_id: str, messages: Sequence[NewMessage], owner: str,
                   ttl: int, source: str, request_key: str | None) -> Fused:
        """Take the lease and open the send; returns the ``begin_send`` columns."""
        ...

    def append(self, session_id: str, messages: Sequence[NewMessage], epoch: int | None,
               extend: int | None, expect: int | None = None) -> Fused:
        """Append (fenced when ``epoch`` is given, conditional on the session's
        ``next_seq`` when ``expect`` is); returns ``next_seq``."""
        ...

    def finish_release(self, session_id: str, send_index: int,
                       messages: Sequence[NewMessage], epoch: int, outcome: Sequence[Any],
                       projections: Projections) -> Fused:
        """End the send, write its projections, release the lease (fenced by
        ``epoch``); ``outcome`` is (status, stop reason, rounds, usage, error) as
        stored. Returns ``next_seq``."""
        ...


def fused_writes(sql: Statements, dialect: Dialect, names: TableNames) -> FusedWrites | None:
    """The dialect's one-round-trip writes, or ``None`` where it has none."""
    if dialect.supports_writable_cte:
        return CTEWrites(sql, dialect, names)
    if dialect.supports_multi_statements:
        from power_loop.store.scripted import ScriptWrites

        return ScriptWrites(sql, dialect, names)
    return None


def _update_args(assign: Sequence[Any], session_id: str, where: Sequence[Any],
                 epoch: int | None) -> list[Any]:
    return [*assign, session_id, *where] + ([] if epoch is None else [epoch])


def projection_arrays(projections: Projections) -> tuple[list[int], list[int], list[str]]:
    """The projections as parallel lists (send indexes, versions, JSON bodies), one per
    send: a later one for the same send wins, as when they are written one by one."""
    latest = {int(i): (int(v), b) for i, v, b in projections}
    return (list(latest), [v for v, _ in latest.values()],
            [dump_json(dict(b)) for _, b in latest.values()])


class CTEWrites:
    """Each write as one data-modifying ``WITH`` statement (PostgreSQL), rendered once;
    the messages and projections travel as array parameters."""

    rollback_on_error = False

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
        self._begin = r(update(BEGIN_SEND, fenced=False) + begin_tail)
        self._begin_keyed = r(update(BEGIN_SEND, keyed, fenced=False) + begin_tail)

        # append: args: the update's, session id, message count, indexes, roles, bodies.
        rows = d.array_rows("u", [("send_index", ColumnType.BIGINT), *text])
        append_tail = (f", m AS ({insert}SELECT {id_}, s.next_seq - ? + u.i - 1, "
                       f"u.send_index, u.role, u.body, {{now}} FROM s, {rows}) "
                       "SELECT next_seq FROM s")
        self._append = {(extend, fenced, expect): r(
                            update(spec, EXPECT_SEQ if expect else "", fenced=fenced)
                            + append_tail)
                        for extend, spec in ((False, APPEND), (True, APPEND_EXTEND))
                        for fenced in (False, True) for expect in (False, True)}

        # finish: args: the update's, the outcome, session id, send index, then session
        # id, message count, send index, roles, bodies, then session id and the
        # projections' indexes, versions, bodies.
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
        self._finish_release = r(update(FINISH_SEND_RELEASE, fenced=True) + finish_tail)

    def begin_send(self, session_id: str, messages: Sequence[NewMessage], owner: str,
                   ttl: int, source: str, request_key: str | None) -> Fused:
        _, roles, bodies = message_arrays(messages, 0)
        n = len(messages)
        if request_key is None:
            sql, keyed = self._begin, []
        else:
            sql, keyed = self._begin_keyed, [session_id, request_key]
        return sql, [owner, ttl, n, session_id, *keyed, session_id, source, request_key, n,
                     session_id, n, roles, bodies]

    def append(self, session_id: str, messages: Sequence[NewMessage], epoch: int | None,
               extend: int | None, expect: int | None = None) -> Fused:
        indexes, roles, bodies = message_arrays(messages)
        n = len(messages)
        assign = [n] if extend is None else [n, extend]
        where = () if expect is None else (expect,)
        sql = self._append[extend is not None, epoch is not None, expect is not None]
        return sql, [*_update_args(assign, session_id, where, epoch), session_id, n, indexes,
                     roles, bodies]

    def finish_release(self, session_id: str, send_index: int,
                       messages: Sequence[NewMessage], epoch: int, outcome: Sequence[Any],
                       projections: Projections) -> Fused:
        _, roles, bodies = message_arrays(messages, send_index)
        n = len(messages)
        return self._finish_release, [
            *_update_args([n], session_id, [send_index], epoch), *outcome, session_id,
            send_index, session_id, n, send_index, roles, bodies, session_id,
            *projection_arrays(projections)]
