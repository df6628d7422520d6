"""The send path's write transactions as one multi-statement text (MySQL, MariaDB).

MySQL has neither ``UPDATE ... RETURNING`` nor data-modifying ``WITH``, but takes several
statements in one text (the connection's ``MULTI_STATEMENTS`` flag), so a write
transaction still costs one round trip:

    BEGIN;
    UPDATE sessions SET ... WHERE id = ? AND <condition> [AND <fence>];
    SET @pl_ok = ROW_COUNT();          -- 1 when the update matched (FOUND_ROWS), else 0
    INSERT INTO messages ... SELECT ..., s.next_seq - n + x.i, ...
        FROM sessions s, (SELECT 0 AS i, ? AS role, ? AS body UNION ALL ...) x
        WHERE s.id = ? AND @pl_ok > 0;
    ...
    SELECT <the columns RETURNING would give> FROM sessions WHERE id = ? AND @pl_ok > 0;
    COMMIT

Every statement after the update is guarded by ``@pl_ok``: when the update matches no
row, nothing is written and the last ``SELECT`` returns nothing, as with
:mod:`power_loop.store.fused`'s statements. The inserts read ``next_seq`` from the
session row this transaction has just updated and locked. Values reach the text through
the driver's own escaping, as for any statement; the text's SQL is built only from
validated identifiers. The texts depend on how many messages a write carries, so they
are rendered on first use and kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from power_loop.store.fused import Fused, Projections, message_arrays, projection_arrays
from power_loop.store.port import Dialect
from power_loop.store.records import NewMessage
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

_GUARD = "SET @pl_ok = ROW_COUNT()"


def _rows(columns: Sequence[str], n: int) -> tuple[dict[str, str], str]:
    """How a statement reads ``n`` rows of parameters: each column's expression (and
    ``i``, the row's ordinal from 0), and what to add to its ``FROM``. One row (the
    common case) is read straight from the parameters; more go through a derived table
    ``x``. Either way the parameters come in the same order."""
    if n == 1:
        return {"i": "0", **dict.fromkeys(columns, "?")}, ""
    first = ", ".join(["0 AS i", *(f"? AS {c}" for c in columns)])
    rest = ", ".join("?" for _ in columns)
    parts = [f"SELECT {first}", *(f"SELECT {i}, {rest}" for i in range(1, n))]
    return {"i": "x.i", **{c: f"x.{c}" for c in columns}}, (
        ", (" + " UNION ALL ".join(parts) + ") x")


class ScriptWrites:
    """Each write as one ``BEGIN; ...; COMMIT`` text (MySQL, MariaDB)."""

    rollback_on_error = True

    def __init__(self, sql: Statements, dialect: Dialect, names: TableNames) -> None:
        self._sql, self._d = sql, dialect
        self._s, self._m, self._sd = names.sessions, names.messages, names.sends
        self._projections = names.raw("projections")
        self._text = lru_cache(maxsize=256)(self._render)

    def _render(self, kind: str, n: int, k: int, keyed: bool, extend: bool,
                fenced: bool, expect: bool = False) -> str:
        """The text of one write: ``kind`` with ``n`` messages and ``k`` projections."""
        d, s, m = self._d, self._s, self._m
        guard = " AND @pl_ok > 0"
        insert = f"INSERT INTO {m} (session_id, seq, send_index, role, body, created_at) "
        parts = ["BEGIN"]
        if kind == "begin":
            assign, where, returning = BEGIN_SEND
            if keyed:
                where += (f" AND NOT EXISTS (SELECT 1 FROM {self._sd} WHERE session_id = ? "
                          "AND request_key = ?)")
            parts += [self._sql.update_text(assign, where), _GUARD,
                      f"INSERT INTO {self._sd} ({SEND_COLUMNS}) SELECT ?, send_count - 1, "
                      "'pending', ?, ?, next_seq - ?, {now}, NULL, NULL, 0, '{}', NULL "
                      f"FROM {s} WHERE id = ?{guard}"]
            if n:
                x, rows = _rows(("role", "body"), n)
                parts.append(f"{insert}SELECT ?, s.next_seq - ? + {x['i']}, s.send_count - 1, "
                             f"{x['role']}, {x['body']}, {{now}} FROM {s} s{rows} "
                             f"WHERE s.id = ?{guard}")
        elif kind == "append":
            assign, where, returning = APPEND_EXTEND if extend else APPEND
            if expect:
                where += EXPECT_SEQ
            x, rows = _rows(("send_index", "role", "body"), n)
            parts += [self._sql.update_text(assign, where, fenced=fenced), _GUARD,
                      f"{insert}SELECT ?, s.next_seq - ? + {x['i']}, {x['send_index']}, "
                      f"{x['role']}, {x['body']}, {{now}} FROM {s} s{rows} "
                      f"WHERE s.id = ?{guard}"]
        else:
            assign, where, returning = FINISH_SEND_RELEASE
            parts += [self._sql.update_text(assign, where, fenced=True), _GUARD,
                      f"UPDATE {self._sd} SET status = ?, finished_at = {{now}}, "
                      "stop_reason = ?, rounds = ?, token_usage = ?, error = ? "
                      f"WHERE session_id = ? AND send_index = ?{guard}"]
            if n:
                x, rows = _rows(("role", "body"), n)
                parts.append(f"{insert}SELECT ?, s.next_seq - ? + {x['i']}, ?, {x['role']}, "
                             f"{x['body']}, {{now}} FROM {s} s{rows} WHERE s.id = ?{guard}")
            if k:
                x, rows = _rows(("send_index", "version", "body"), k)
                parts.append(d.upsert(
                    self._projections, ("session_id", "send_index", "version", "body",
                                        "created_at"),
                    ("session_id", "send_index"), ("version", "body", "created_at"),
                    source=(f"SELECT ?, {x['send_index']}, {x['version']}, {x['body']}, "
                            f"{{now}} FROM {rows[2:] if rows else 'DUAL'} "
                            "WHERE @pl_ok > 0")))
        parts += [f"SELECT {returning} FROM {s} WHERE id = ?{guard}", "COMMIT"]
        return d.render("; ".join(parts))

    def begin_send(self, session_id: str, messages: Sequence[NewMessage], owner: str,
                   ttl: int, source: str, request_key: str | None) -> Fused:
        _, roles, bodies = message_arrays(messages, 0)
        n, keyed = len(messages), request_key is not None
        args: list[Any] = [owner, ttl, n, session_id]
        if keyed:
            args += [session_id, request_key]
        args += [session_id, source, request_key, n, session_id]
        if n:
            args += [session_id, n, *_flat(roles, bodies), session_id]
        args.append(session_id)
        return self._text("begin", n, 0, keyed, False, False), args

    def append(self, session_id: str, messages: Sequence[NewMessage], epoch: int | None,
               extend: int | None, expect: int | None = None) -> Fused:
        indexes, roles, bodies = message_arrays(messages)
        n = len(messages)
        args: list[Any] = [n] if extend is None else [n, extend]
        args.append(session_id)
        if expect is not None:
            args.append(expect)
        if epoch is not None:
            args.append(epoch)
        args += [session_id, n, *_flat(indexes, roles, bodies), session_id, session_id]
        return self._text("append", n, 0, False, extend is not None, epoch is not None,
                          expect is not None), args

    def finish_release(self, session_id: str, send_index: int,
                       messages: Sequence[NewMessage], epoch: int, outcome: Sequence[Any],
                       projections: Projections) -> Fused:
        _, roles, bodies = message_arrays(messages, send_index)
        rows = projection_arrays(projections)
        n, k = len(messages), len(rows[0])
        args: list[Any] = [n, session_id, send_index, epoch, *outcome, session_id, send_index]
        if n:
            args += [session_id, n, send_index, *_flat(roles, bodies), session_id]
        if k:
            args += [session_id, *_flat(*rows)]
        args.append(session_id)
        return self._text("finish", n, k, False, False, True), args


def _flat(*columns: Sequence[Any]) -> list[Any]:
    """Parallel columns as one row-major list."""
    return [value for row in zip(*columns, strict=True) for value in row]
